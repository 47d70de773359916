"""``recokd distill --images``: a student from a teacher and the user's own scans, labels optional, on CPU.

The teacher whose labels are checked is the shipped phantom teacher (a real model: its labels
must cover the structures); the tiny teacher of the shared pipeline teaches from a results
folder, with labeled and unlabeled scans mixed.
"""

from __future__ import annotations

import json
import shutil

import blosc2
import numpy as np
import pytest
import torch
from conftest import DATASET, TINY_SCHEDULE, isolated_env, json_lines, recokd

from recokd.data.phantom import write_dataset
from recokd.demo import DemoConfig
from recokd.evaluate.metrics import dice_per_class
from recokd.nnunet.checkpoint import load_checkpoint
from recokd.nnunet.teacher import load_teacher
from recokd.package.archive import load_package
from recokd.package.registry import SOURCE_BUNDLED_DIR
from recokd.package.teacher_folder import read_teacher
from recokd.scans.cases import find_cases
from recokd.scans.dataset import MANIFEST, build_scans_dataset
from recokd.scans.teacher_labels import TeacherLabeller
from recokd.workspace import Workspace

PHANTOM_TEACHER = SOURCE_BUNDLED_DIR / "phantom-teacher.recokd.zip"
CPU = torch.device("cpu")
SCANS_DATASET = "Dataset900_imagesTr"  # the first free id, named after the images folder


@pytest.fixture(scope="module")
def held_out_phantoms(tmp_path_factory):
    """Four phantoms like those the shipped teacher learned from (the demo's size), from another seed."""
    return write_dataset(tmp_path_factory.mktemp("scans"), 4, seed=7, config=DemoConfig().phantom)


def seg_of(dataset_folder, case: str) -> np.ndarray:
    data = dataset_folder / "nnUNetPlans_3d_fullres"
    return np.asarray(blosc2.open(str(data / f"{case}_seg.b2nd"), mode="r")[:])[0]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A work directory activated in this process (nnU-Net's variables restored afterwards)."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, "")
    return Workspace.under(tmp_path / "work", respect_environment=False).activate()


def labeller_for(workspace, **settings) -> TeacherLabeller:
    folder = read_teacher(PHANTOM_TEACHER).results_folder(workspace.root)
    return TeacherLabeller(load_teacher(folder), CPU, **settings)


def test_a_student_learns_from_a_teacher_package_and_scans_without_labels(held_out_phantoms, workspace, tmp_path):
    work, package = tmp_path / "cli", tmp_path / "student.recokd.zip"
    result = recokd("distill", "--teacher", str(PHANTOM_TEACHER), "--images", str(held_out_phantoms / "imagesTr"),
                    "--work-dir", str(work), "--device", "cpu", "--width", "1/4", "--calibration-patches", "2",
                    "--no-teacher-mirroring", "--progress", "json", "--export", str(package), *TINY_SCHEDULE,
                    env=isolated_env())
    events = json_lines(result.stdout)
    scans = [e for e in events if e["event"] == "progress" and e["stage"] == "scans"]
    assert scans and scans[-1]["fraction"] == 1.0 and "teacher tile" in " ".join(e["message"] for e in scans)
    assert events[-1]["event"] == "result" and events[-1]["package"] == str(package)
    student = load_package(package).plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    assert student["features_per_stage"] == [8, 8, 16, 32], "a quarter of the teacher's 16, 32, 64, 128"

    dataset = work / "nnUNet_preprocessed" / SCANS_DATASET
    manifest = json.loads((dataset / MANIFEST).read_text())
    assert sorted(manifest["cases"]) == [f"phantom_00{i}" for i in range(4)]
    targets = {entry["target"] for entry in manifest["cases"].values()}
    assert len(targets) == 1 and len(targets.pop()) == 64, "every target is the teacher's, named by its sha256"
    assert len(json.loads((dataset / "splits_final.json").read_text())) == 4

    # The same scans with their labels, preprocessed the same way: the teacher's targets cover every structure.
    images, labels = held_out_phantoms / "imagesTr", held_out_phantoms / "labelsTr"
    truth = build_scans_dataset(workspace, images, find_cases(images, labels, 1),
                                labeller_for(workspace, mirroring=False))
    assert truth.labeled == tuple(manifest["cases"]) and truth.predicted == 0
    classes = range(1, 6)
    dice = {c: [] for c in classes}
    for case in manifest["cases"]:
        for c, value in dice_per_class(seg_of(dataset, case), seg_of(truth.folder, case), classes).items():
            dice[c].append(value)
    mean = {c: float(np.nanmean(values)) for c, values in dice.items()}
    assert min(mean[c] for c in (1, 2, 3, 5)) > 0.7, mean  # liver, kidneys, vessel
    assert mean[4] > 0.2, mean  # the adrenal gland, the teacher's weakest structure


def test_teacher_labels_are_predicted_once_and_again_only_for_another_teacher(held_out_phantoms, workspace,
                                                                               monkeypatch, tmp_path):
    calls = []
    predict = TeacherLabeller.__call__
    monkeypatch.setattr(TeacherLabeller, "__call__", lambda self, *a, **k: calls.append(1) or predict(self, *a, **k))
    images = tmp_path / "images"
    shutil.copytree(held_out_phantoms / "imagesTr", images)
    labeller = labeller_for(workspace, mirroring=False)

    first = build_scans_dataset(workspace, images, find_cases(images, None, 1), labeller)
    assert (len(calls), first.predicted) == (4, 4)
    data = first.folder / "nnUNetPlans_3d_fullres"
    written = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}
    assert len(written) == 12 and not (first.folder / ".staging").exists()

    again = build_scans_dataset(workspace, images, find_cases(images, None, 1), labeller)
    assert (len(calls), again.predicted, again.name) == (4, 0, first.name)
    assert {p.name: p.stat().st_mtime_ns for p in data.iterdir()} == written, "a cached case is not rewritten"

    labels = tmp_path / "labels"
    labels.mkdir()
    shutil.copy(held_out_phantoms / "labelsTr" / "phantom_002.nii.gz", labels)
    mixed = build_scans_dataset(workspace, images, find_cases(images, labels, 1), labeller)
    assert len(calls) == 4 and mixed.labeled == ("phantom_002",) and mixed.predicted == 0
    assert (data / "phantom_002_seg.b2nd").stat().st_mtime_ns != written["phantom_002_seg.b2nd"]

    other = build_scans_dataset(workspace, images, find_cases(images, labels, 1),
                                labeller_for(workspace, mirroring=False, tile_step=0.75))
    assert len(calls) == 7 and other.predicted == 3, "another teacher setting relabels the unlabeled cases"

    (images / "phantom_003_0000.nii.gz").unlink()
    fewer = build_scans_dataset(workspace, images, find_cases(images, labels, 1),
                                labeller_for(workspace, mirroring=False, tile_step=0.75))
    assert len(calls) == 7 and fewer.unlabeled == ("phantom_000", "phantom_001")
    assert not (data / "phantom_003.b2nd").exists()
    assert sorted(json.loads((fewer.folder / MANIFEST).read_text())["cases"]) == ["phantom_000", "phantom_001",
                                                                                  "phantom_002"]


def test_labeled_and_teacher_labelled_scans_train_together_with_soft_targets_and_resume_predicts_nothing(
        tiny_pipeline, tmp_path):
    raw = tiny_pipeline.work_dir / "nnUNet_raw" / "Dataset991_TinyPhantom"
    labels = tmp_path / "labels"
    labels.mkdir()
    for case in ("phantom_000", "phantom_003"):
        shutil.copy(raw / "labelsTr" / f"{case}.nii.gz", labels)
    work = tmp_path / "work"
    args = ["distill", "--teacher", str(tiny_pipeline.teacher), "--images", str(raw / "imagesTr"), "--labels",
            str(labels), "--work-dir", str(work), "--device", "cpu", "--width", "1/4", "--calibration-patches", "2",
            "--progress", "none", "--no-export", "--iterations-per-epoch", "2", "--val-iterations", "1",
            "--soft-target-weight", "0.5", "--labeled-share", "0"]  # share 0: every step draws teacher-labelled cases
    recokd(*args, "--epochs", "1", env=isolated_env())
    dataset = work / "nnUNet_preprocessed" / SCANS_DATASET
    manifest = json.loads((dataset / MANIFEST).read_text())
    targets = {case: entry["target"] for case, entry in manifest["cases"].items()}
    assert len(targets) == 6 and targets["phantom_000"] == targets["phantom_003"] == "labels"
    assert len({t for t in targets.values() if t != "labels"}) == 1
    student = work / "nnUNet_results" / SCANS_DATASET / "ReCoKDTrainer__nnUNetPlans_ReCoKD_w4__3d_fullres" / "fold_0"
    saved = load_checkpoint(student / "checkpoint_final.pth")
    assert saved["recokd"]["options"]["soft_target_weight"] == 0.5 and saved["recokd"]["options"]["labeled_share"] == 0
    assert saved["logging"]["kd_soft"][-1] > 0, "the teacher's soft targets are learned on the cases it labelled"

    for case in targets:  # labels and the teacher's targets alike hold label values (-1: outside the scan's non-zero)
        assert set(np.unique(seg_of(dataset, case))) <= set(range(-1, 6)), case

    data = dataset / "nnUNetPlans_3d_fullres"
    written = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}
    recokd(*args, "--epochs", "2", "--resume", env=isolated_env())
    assert {p.name: p.stat().st_mtime_ns for p in data.iterdir()} == written
    assert json.loads((dataset / MANIFEST).read_text()) == manifest


def test_a_teacher_package_teaches_on_a_preprocessed_dataset_too(tiny_pipeline, tiny_teacher_package, tmp_path):
    """``--teacher x.recokd.zip --dataset``: the package is written out once as a results folder in the work dir."""
    env = tiny_pipeline.env | {"nnUNet_raw": str(tiny_pipeline.work_dir / "nnUNet_raw"),
                               "nnUNet_preprocessed": str(tiny_pipeline.work_dir / "nnUNet_preprocessed"),
                               "nnUNet_results": str(tmp_path / "results")}
    recokd("distill", "--teacher", str(tiny_teacher_package), "--dataset", DATASET, "--work-dir", str(tmp_path),
           "--device", "cpu", "--mode", "logit", "--width", "1/8", "--calibration-patches", "2", "--progress", "none",
           "--no-export", *TINY_SCHEDULE, env=env)
    teachers = list((tmp_path / "teachers").glob(f"*/{DATASET}/nnUNetTrainer__nnUNetPlans__3d_fullres"))
    assert len(teachers) == 1 and (teachers[0] / "fold_0" / "checkpoint_final.pth").is_file()
    student = tmp_path / "results" / DATASET / "ReCoKDTrainer_logitKD__nnUNetPlans_ReCoKD_w8__3d_fullres" / "fold_0"
    assert load_checkpoint(student / "checkpoint_final.pth")["recokd"]["teacher"]["folder"] == str(teachers[0])


def test_prepare_only_readies_the_scans_for_a_multi_process_run(held_out_phantoms, workspace, monkeypatch):
    """torchrun's processes cannot prepare scans together: before --prepare-only they say so, after it they
    find the dataset ready and predict nothing."""
    from recokd.scans.prepare import prepare_scans

    common = ["distill", "--teacher", str(PHANTOM_TEACHER), "--images", str(held_out_phantoms / "imagesTr"),
              "--work-dir", str(workspace.root), "--device", "cpu", "--no-teacher-mirroring", "--progress", "json"]
    ranks = {"WORLD_SIZE": "2", "RANK": "1"}
    refused = recokd(*common, "--no-export", *TINY_SCHEDULE, env={**isolated_env(), **ranks}, check=False)
    assert refused.returncode == 2 and "--prepare-only in a single process first" in refused.stderr

    result = recokd(*common, "--prepare-only", env=isolated_env())
    assert json_lines(result.stdout)[-1] == {"event": "result", "dataset": SCANS_DATASET,
                                             "folder": str(workspace.preprocessed / SCANS_DATASET)}
    assert not (workspace.results / SCANS_DATASET).exists(), "nothing was trained"

    for name, value in ranks.items():
        monkeypatch.setenv(name, value)
    prepared = prepare_scans(workspace, read_teacher(PHANTOM_TEACHER), held_out_phantoms / "imagesTr", None, 0,
                             mirroring=False)
    assert prepared.dataset.predicted == 0 and prepared.dataset.name == SCANS_DATASET
