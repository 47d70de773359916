"""``recokd distill`` end to end on CPU: trains, logs every KD term, exports, refuses bad teachers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from conftest import DATASET, TINY_SCHEDULE, json_lines

from recokd.nnunet.checkpoint import load_checkpoint
from recokd.package.archive import load_package


def test_distill_trains_student_from_teacher_and_exports_package(tiny_pipeline, tmp_path):
    package = tmp_path / "student.recokd.zip"
    result = tiny_pipeline.distill("--width", "1/4", "--progress", "json", "--export", str(package),
                                   "--epochs", "2", "--iterations-per-epoch", "2", "--val-iterations", "1")
    events = json_lines(result.stdout)  # every stdout line must be a JSON object
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["epoch"] for e in progress] == [1, 2]
    assert progress[-1]["fraction"] == 1.0
    assert set(progress[-1]["values"]) >= {"seg_loss", "kd_fg", "kd_bg", "kd_att", "kd_ctx", "kd_total", "kd_lambda"}
    assert progress[-1]["values"]["kd_fg"] > 0 and progress[-1]["values"]["kd_ctx"] >= 0
    assert 0 <= progress[-1]["values"]["mean_fg_dice"] <= 1, "nnU-Net's pseudo Dice (numpy floats) is reported"
    assert events[-1]["event"] == "result" and events[-1]["package"] == str(package)

    student_folder = tiny_pipeline.work_dir / "nnUNet_results" / DATASET / "ReCoKDTrainer__nnUNetPlans_ReCoKD_w4__3d_fullres"
    checkpoint = load_checkpoint(student_folder / "fold_0" / "checkpoint_final.pth")
    assert checkpoint["recokd"]["options"]["mode"] == "recokd"
    assert checkpoint["recokd"]["kd_modules"], "adapters and MS-CA blocks are checkpointed"
    assert (student_folder / "fold_0" / "distillation_progress.png").stat().st_size > 10_000
    log_text = "".join(p.read_text() for p in (student_folder / "fold_0").glob("training_log_*.txt"))
    assert "distillation: seg_loss" in log_text and "kd_ctx" in log_text

    teacher_plans = json.loads((tiny_pipeline.teacher / "plans.json").read_text())
    student_plans = json.loads((student_folder / "plans.json").read_text())
    teacher_arch = teacher_plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    student_arch = student_plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    assert student_arch["features_per_stage"] == [max(8, c // 4) for c in teacher_arch["features_per_stage"]]
    loaded = load_package(package)
    assert loaded.plans["plans_name"] == "nnUNetPlans_ReCoKD_w4"
    assert not any("adapter" in key or "ms_ca" in key for key in loaded.state_dict)


def test_distill_baselines_land_in_their_own_result_folders(tiny_pipeline):
    for mode, trainer in (("none", "ReCoKDTrainer_noKD"), ("logit", "ReCoKDTrainer_logitKD")):
        tiny_pipeline.distill("--mode", mode, "--width", "1/2", "--calibration-patches", "4", "--progress", "none",
                              "--no-export", *TINY_SCHEDULE)
        folder = tiny_pipeline.work_dir / "nnUNet_results" / DATASET / f"{trainer}__nnUNetPlans_ReCoKD_w2__3d_fullres"
        saved = load_checkpoint(folder / "fold_0" / "checkpoint_final.pth")["recokd"]
        assert saved["options"]["mode"] == mode
        assert saved["kd_modules"] == {}


def test_teacher_with_other_labels_is_refused_with_a_clear_message(tiny_pipeline, tmp_path):
    wrong = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.copytree(tiny_pipeline.teacher, wrong)
    dataset_json = json.loads((wrong / "dataset.json").read_text())
    dataset_json["labels"] = {"background": 0, "tumour": 1}
    (wrong / "dataset.json").write_text(json.dumps(dataset_json))
    result = tiny_pipeline.distill("--width", "1/8", "--progress", "json", "--no-export", *TINY_SCHEDULE,
                                   teacher=wrong, check=False)
    assert result.returncode == 2
    assert "labels" in result.stderr and "differ" in result.stderr
    error = json_lines(result.stdout)[-1]
    assert error["event"] == "error" and "labels" in error["message"]


def test_unsupported_width_is_refused_before_any_work(tiny_pipeline):
    result = tiny_pipeline.distill("--width", "1/3", "--no-export", check=False)
    assert result.returncode == 2
    assert "1/3" in result.stderr and "1/4" in result.stderr


PLAIN_VS_NNUNET = """
import json, random, sys
from fractions import Fraction
from pathlib import Path
import numpy as np, torch
from recokd.distill.options import KDOptions
from recokd.nnunet.checkpoint import load_checkpoint
from recokd.nnunet.training import Schedule, run_distillation, train_teacher
from recokd.workspace import Workspace

if __name__ == "__main__":
    work_dir, teacher, results = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    workspace = Workspace(work_dir, work_dir / "nnUNet_raw", work_dir / "nnUNet_preprocessed", results).activate()
    schedule, width, losses = Schedule(epochs=2, iterations_per_epoch=3, val_iterations_per_epoch=1), Fraction(1, 8), {}
    for name, train in (
            ("nnunet", lambda: train_teacher(workspace, sys.argv[4], schedule=schedule, width=width)),
            ("plain", lambda: run_distillation(workspace, teacher, sys.argv[4], width,
                                               KDOptions(mode="none", init="random"), schedule=schedule))):
        random.seed(0); np.random.seed(0); torch.manual_seed(0)
        folder = train()
        logged = load_checkpoint(folder / "fold_0" / "checkpoint_final.pth")["logging"]["train_losses"]
        losses[name] = [float(loss) for loss in logged]
    print(json.dumps(losses))
"""


def test_plain_student_trains_exactly_like_nnunets_own_trainer_at_its_width(tiny_pipeline, tmp_path):
    """The random-init no-KD baseline is nnU-Net: same seed, same width, the same training loss at every epoch."""
    driver = tmp_path / "driver.py"
    driver.write_text(PLAIN_VS_NNUNET)
    finished = subprocess.run([sys.executable, str(driver), str(tiny_pipeline.work_dir), str(tiny_pipeline.teacher),
                               str(tmp_path / "nnUNet_results"), DATASET], env=tiny_pipeline.env, capture_output=True,
                              text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    losses = json.loads(finished.stdout.strip().splitlines()[-1])
    assert len(losses["nnunet"]) == 2 and losses["plain"] == losses["nnunet"]


def test_inherited_student_starts_as_the_pruned_teacher_and_records_how(tiny_pipeline):
    """--init teacher (the default) prunes and refits the teacher on calibration patches before step 1."""
    tiny_pipeline.distill("--mode", "none", "--width", "1/8", "--init-importance", "gamma", "--calibration-patches",
                          "3", "--learning-rate", "0.001", "--progress", "none", "--no-export", *TINY_SCHEDULE)
    fold = tiny_pipeline.work_dir / "nnUNet_results" / DATASET / "ReCoKDTrainer_noKD__nnUNetPlans_ReCoKD_w8__3d_fullres" \
        / "fold_0"
    saved = load_checkpoint(fold / "checkpoint_final.pth")
    inheritance = saved["recokd"]["inheritance"]
    assert inheritance["importance"] == "gamma" and inheritance["refit"] == "least_squares"
    assert inheritance["calibration_patches"] == 3
    assert inheritance["layer_error_refitted"] < inheritance["layer_error_sliced"]
    assert saved["recokd"]["options"]["learning_rate"] == 0.001
    assert saved["optimizer_state"]["param_groups"][0]["initial_lr"] == 0.001
    log_text = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "Student initialised from the teacher" in log_text


def test_random_init_records_no_inheritance(tiny_pipeline, tmp_path):
    tiny_pipeline.distill("--mode", "logit", "--width", "1/4", "--init", "random", "--progress", "none",
                          "--no-export", *TINY_SCHEDULE)
    folder = tiny_pipeline.work_dir / "nnUNet_results" / DATASET / "ReCoKDTrainer_logitKD__nnUNetPlans_ReCoKD_w4__3d_fullres"
    saved = load_checkpoint(folder / "fold_0" / "checkpoint_final.pth")["recokd"]
    assert saved["inheritance"] is None and saved["options"]["init"] == "random"
    assert saved["options"]["logit_weight"] == 1.0
