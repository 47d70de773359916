"""A folder of scans as an nnU-Net preprocessed dataset, with the teacher's labels where there are none.

Layout, under ``nnUNet_preprocessed/Dataset9XX_<images folder name>/`` (the first free id from
900; the same images folder always maps to the same dataset)::

    dataset.json              the teacher's, with numTraining
    <plans name>.json         the teacher's plans (dataset_name set to this dataset)
    dataset_fingerprint.json  the teacher's intensity statistics (nnU-Net's trainer copies this file)
    splits_final.json         nnU-Net's seeded k-fold split, k = min(5, cases)
    recokd_scans.json         the manifest: where each case came from and what its target is
    <data_identifier>/        <case>.b2nd, <case>_seg.b2nd, <case>.pkl, as nnU-Net 2.8's preprocessor writes

Each case is preprocessed by nnU-Net's own preprocessor (``run_case_npy`` with the teacher's
plans). A labeled case's target is its label file, preprocessed with it; an unlabeled case's
target is the teacher's argmax on the preprocessed volume (:mod:`.teacher_labels`), with
nnU-Net's ``-1`` outside the non-zero region where the teacher sees background, and the
foreground locations nnU-Net samples patches from computed by nnU-Net's own function.

The manifest records per case its sources (path, size, modification time), the preprocessing
(a sha256 of the teacher's plans) and its target (``"labels"`` or the teacher's fingerprint). A
case whose record matches is not touched again: a second run or a resume predicts nothing, and
a different teacher, plans, scan or label file redoes exactly the cases it changes. Every file
is written under a temporary name and moved into place, the manifest last, so an interrupted
build leaves only whole cases that the next run either keeps or redoes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recokd.errors import RecokdError
from recokd.inference.image_io import atomic_destination, read_image, volume_array
from recokd.inference.validation import channels_first, check_finite, nnunet_spacing
from recokd.nnunet.prepare import DATASET_FOLDER
from recokd.scans.cases import ScanCase
from recokd.scans.teacher_labels import TeacherLabeller
from recokd.workspace import Workspace

log = logging.getLogger(__name__)

MANIFEST = "recokd_scans.json"
FIRST_DATASET_ID = 900
LABELS_TARGET = "labels"
CASE_SUFFIXES = (".b2nd", "_seg.b2nd", ".pkl")  # nnUNetDatasetBlosc2's files of one case
SPLIT_SEED = 12345  # nnU-Net's own seed for its default split

ScanProgress = Callable[[float, str], None]  # (fraction of the cases to prepare, message)


@dataclass(frozen=True)
class ScansDataset:
    """The prepared dataset: its name and folder, which cases learn from labels and which from the
    teacher, and how many the teacher labels in this build (0 when the cache holds them all)."""

    name: str
    folder: Path
    labeled: tuple[str, ...]
    unlabeled: tuple[str, ...]
    predicted: int


def scans_dataset_name(workspace: Workspace, images: Path) -> str:
    """The dataset of ``images`` in this work directory: the one whose manifest names it, else a new id from 900."""
    images = Path(images).resolve()
    taken = set()
    for base in (workspace.raw, workspace.preprocessed, workspace.results):
        for folder in sorted(base.iterdir()) if base.is_dir() else ():
            match = DATASET_FOLDER.match(folder.name)
            if match is None:
                continue
            if base == workspace.preprocessed and _read_manifest(folder).get("images") == str(images):
                return folder.name
            taken.add(int(match.group(1)))
    free = next((i for i in range(FIRST_DATASET_ID, 1000) if i not in taken), None)
    if free is None:
        raise RecokdError(f"Dataset ids {FIRST_DATASET_ID}-999 are all taken in {workspace.preprocessed}; use another "
                          "--work-dir.")
    return f"Dataset{free:03d}_{re.sub(r'[^A-Za-z0-9]+', '_', images.name).strip('_') or 'Scans'}"


def build_scans_dataset(
    workspace: Workspace,
    images: Path,
    cases: list[ScanCase],
    labeller: TeacherLabeller,
    progress: ScanProgress | None = None,
    read_only: bool = False,
) -> ScansDataset:
    """Bring the dataset of ``images`` up to date with ``cases`` and the labeller's teacher; returns it.

    ``cases`` must have passed :func:`recokd.scans.checks.check_scans`. With ``read_only`` (the
    ranks of a multi-process run) nothing is written: a dataset that is not up to date is an error.
    """
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    teacher = labeller.teacher
    name = scans_dataset_name(workspace, images)
    folder = workspace.preprocessed / name
    plans_manager = PlansManager(teacher.plans)
    configuration = plans_manager.get_configuration(teacher.configuration)
    data = folder / configuration.data_identifier
    preprocessing = _sha256({"plans": teacher.plans, "configuration": teacher.configuration})
    fingerprint = labeller.fingerprint() if any(case.label is None for case in cases) else None
    expected = {case.name: _record(case, preprocessing, fingerprint) for case in cases}
    manifest = _read_manifest(folder)
    recorded = manifest.get("cases", {})
    todo = [case for case in cases if recorded.get(case.name) != expected[case.name] or not _case_complete(data, case.name)]
    stale = sorted((set(recorded) | set(_identifiers(data))) - set(expected))
    side_files = _side_files(teacher, name, sorted(expected))
    changed = [file for file, text in side_files.items() if _read_text(folder / file) != text]
    result = ScansDataset(name, folder, tuple(c.name for c in cases if c.label is not None),
                          tuple(c.name for c in cases if c.label is None), predicted=len(
                              [c for c in todo if c.label is None]))
    if not (todo or stale or changed):
        return result
    if read_only:
        raise RecokdError(f"The scans of {images} are not prepared yet in {folder}, and several processes cannot "
                          "prepare them at once: run the same recokd distill command with --prepare-only in a single "
                          "process first (it caches them), then this one.")

    folder.mkdir(parents=True, exist_ok=True)
    data.mkdir(exist_ok=True)
    staging = folder / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    for file in changed:
        _write_atomically(folder / file, side_files[file])
    manifest = {"images": str(Path(images).resolve()), "cases": {k: v for k, v in recorded.items() if k in expected}}
    for case_name in stale:
        for suffix in CASE_SUFFIXES:
            (data / f"{case_name}{suffix}").unlink(missing_ok=True)
    if stale:
        log.info("Removed %d case(s) no longer in %s: %s", len(stale), images, ", ".join(stale[:5]))
    _write_manifest(folder, manifest)

    label_manager = plans_manager.get_label_manager(teacher.dataset_json)
    preprocessor = DefaultPreprocessor(verbose=False)
    for index, case in enumerate(todo):
        def report(done: float, message: str, index: int = index, case: ScanCase = case) -> None:
            if progress is not None:
                progress((index + done) / len(todo), f"case {case.name} ({index + 1}/{len(todo)}): {message}")

        report(0.0, "preprocessing")
        staging.mkdir(exist_ok=True)
        volume, target, properties = _preprocess(case, teacher, plans_manager, configuration, preprocessor)
        if case.label is None:
            report(0.0, "teacher predicting")
            labels = labeller(volume, on_tile=lambda done, total: report(done / total, f"teacher tile {done}/{total}"))
            target = _teacher_target(labels, target, properties, label_manager, preprocessor, plans_manager,
                                     configuration, teacher.dataset_json)
        _save_case(staging / case.name, volume, target, properties, configuration.patch_size)
        for suffix in CASE_SUFFIXES:
            os.replace(staging / f"{case.name}{suffix}", data / f"{case.name}{suffix}")
        manifest["cases"][case.name] = expected[case.name]
        _write_manifest(folder, manifest)
        report(1.0, "done")
    shutil.rmtree(staging, ignore_errors=True)
    log.info("Scans dataset %s: %d case(s), %d prepared now (%d labelled by the teacher)", name, len(cases), len(todo),
             result.predicted)
    return result


def _preprocess(case: ScanCase, teacher, plans_manager, configuration, preprocessor) -> tuple:
    """nnU-Net's ``run_case_npy`` on the case's scan (and label): ``(data, seg, properties)`` on the preprocessed grid.

    The scan is read as nnU-Net's ``SimpleITKIO`` reads files (channels stacked first, spacing
    reversed to ``(z, y, x)``), so the teacher sees what it saw in training.
    """
    images = [read_image(path) for path in case.images]
    arrays = [volume_array(image)[0] for image in images]
    volume = channels_first(np.concatenate([a if a.ndim == 4 else a[None] for a in arrays]), teacher.channels)
    check_finite(volume)
    first = images[0]
    properties = {"sitk_stuff": {"spacing": first.GetSpacing(), "origin": first.GetOrigin(),
                                 "direction": first.GetDirection()},
                  "spacing": nnunet_spacing(first.GetSpacing()[:3])}
    seg = None
    if case.label is not None:
        label = read_image(case.label)  # referenced while its voxels are viewed
        seg = np.array(volume_array(label)[0], dtype=np.float32)[None]
        if seg.shape[1:] != volume.shape[1:]:
            raise RecokdError(f"Case {case.name}: the label file {case.label.name} has {seg.shape[1:]} voxels, its "
                              f"scan {volume.shape[1:]}. Labels must be on their scan's voxel grid.")
    return preprocessor.run_case_npy(volume, seg, properties, plans_manager, configuration, teacher.dataset_json)


def _teacher_target(labels: np.ndarray, outside: np.ndarray, properties: dict, label_manager, preprocessor,
                    plans_manager, configuration, dataset_json: dict) -> np.ndarray:
    """The teacher's ``labels`` ``(z, y, x)`` as nnU-Net stores a target ``(1, z, y, x)``, with what
    ``run_case_npy`` adds to a labeled case.

    ``outside`` is the preprocessor's segmentation of an unlabeled case: ``-1`` outside the
    non-zero region, 0 inside. As nnU-Net's cropping does for a label map, background there
    stays ``-1``. ``class_locations`` (the voxels nnU-Net's foreground oversampling draws
    patches around) come from nnU-Net's own sampler, for the classes ``run_case_npy`` samples.
    """
    seg = np.where((outside[0] < 0) & (labels == 0), -1, labels)[None]
    classes = list(label_manager.foreground_labels)
    if label_manager.has_ignore_label:
        classes.append([-1] + label_manager.all_labels)
    properties["class_locations"] = preprocessor._sample_foreground_locations(seg, classes)
    seg = preprocessor.modify_seg_fn(seg, plans_manager, dataset_json, configuration)
    return seg.astype(np.int16 if np.max(seg) > 127 else np.int8)


def _save_case(truncated: Path, data: np.ndarray, seg: np.ndarray, properties: dict, patch_size) -> None:
    """Store one case as ``DefaultPreprocessor.run_case_save`` does (nnU-Net 2.8: Blosc2, float32 data, int16 seg)."""
    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2

    data = data.astype(np.float32, copy=False)
    seg = seg.astype(np.int16, copy=False)
    blocks, chunks = comp_blosc2_params(data.shape, tuple(patch_size), data.itemsize)
    blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, tuple(patch_size), seg.itemsize)
    nnUNetDatasetBlosc2.save_case(data, seg, properties, str(truncated), chunks=chunks, blocks=blocks,
                                  chunks_seg=chunks_seg, blocks_seg=blocks_seg)


def _record(case: ScanCase, preprocessing: str, fingerprint: str | None) -> dict:
    """What a case's files were made from; a case is reused when its record is unchanged."""
    return {"scan": [_stat(path) for path in case.images],
            "label": _stat(case.label) if case.label is not None else None,
            "preprocessing": preprocessing,
            "target": LABELS_TARGET if case.label is not None else fingerprint}


def _stat(path: Path) -> list:
    """``[path, bytes, newest modification ns]``; a DICOM folder sums and maxes over its files."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    stats = [p.stat() for p in files]
    return [str(path), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]


def _side_files(teacher, name: str, case_names: list[str]) -> dict[str, str]:
    """dataset.json, plans, fingerprint and split as the text they should hold."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    files = {
        "dataset.json": teacher.dataset_json | {"numTraining": len(case_names)},
        f"{teacher.plans_identifier}.json": teacher.plans | {"dataset_name": name},
        "dataset_fingerprint.json": {
            "foreground_intensity_properties_per_channel": teacher.plans.get(
                "foreground_intensity_properties_per_channel"),
            "note": "the teacher's intensity statistics, which preprocessed these scans; written by recokd"},
    }
    if len(case_names) > 1:
        splits = generate_crossval_split(case_names, seed=SPLIT_SEED, n_splits=min(5, len(case_names)))
        files["splits_final.json"] = [{k: [str(c) for c in v] for k, v in split.items()} for split in splits]
    return {file: json.dumps(content, indent=2, default=str) for file, content in files.items()}


def _identifiers(data: Path) -> list[str]:
    return sorted(p.name[: -len(".pkl")] for p in data.glob("*.pkl")) if data.is_dir() else []


def _case_complete(data: Path, name: str) -> bool:
    return all((data / f"{name}{suffix}").is_file() for suffix in CASE_SUFFIXES)


def _sha256(content: dict) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def _read_text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _read_manifest(folder: Path) -> dict:
    text = _read_text(folder / MANIFEST)
    return json.loads(text) if text else {}


def _write_manifest(folder: Path, manifest: dict) -> None:
    _write_atomically(folder / MANIFEST, json.dumps(manifest, indent=2))


def _write_atomically(path: Path, text: str) -> None:
    with atomic_destination(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def teacher_labelled_cases(folder: Path) -> frozenset[str]:
    """The cases of the scans dataset in ``folder`` whose targets are the teacher's labels (none for other datasets)."""
    cases = _read_manifest(Path(folder)).get("cases", {})
    return frozenset(name for name, record in cases.items() if record["target"] != LABELS_TARGET)
