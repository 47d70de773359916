"""Checks that a teacher can preprocess and label a folder of scans, run before anything is written.

What is refused, each with a :class:`RecokdError` that says what to change:

- plans that cannot preprocess a scan: a reader that reorients (arrays unlike ``SimpleITKIO``'s)
  (ReCoKD reads scans as that reader does), a region-based or cascade configuration, or a
  normalisation that needs intensity statistics the plans lack (``CTNormalization`` clips and
  scales with ``foreground_intensity_properties_per_channel``, which a hand-made plans file may
  miss); anything else nnU-Net's preprocessor fails on is found by running it on a small
  volume;
- scans that are unreadable, not 3D/4D scalar volumes, or whose channels do not match the
  teacher's; a DICOM series of another modality than CT for a teacher that normalises its
  input as CT (files other than DICOM carry no modality to check);
- labels of another size than their scan, with non-integer values, or with values the
  teacher's ``dataset.json`` does not define.

Image files are checked from their headers (cheap); label files are read whole (their values
matter). DICOM series are read later, when preprocessed, and a failure there is reported then.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from recokd.errors import RecokdError
from recokd.inference.image_io import dicom_series, read_image
from recokd.inference.predictor import ARRAY_COMPATIBLE_READERS
from recokd.package.teacher_folder import TeacherSource
from recokd.scans.cases import ScanCase

CT_STATISTICS = ("mean", "std", "percentile_00_5", "percentile_99_5")
_PROBE_SHAPE = (12, 12, 12)
_MODALITY_TAG = "0008|0060"


def check_teacher_can_preprocess(teacher: TeacherSource) -> None:
    """Refuse plans whose preprocessing the scans cannot go through (see the module docstring)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = teacher.plans
    where = f"The teacher's plans ({teacher.path.name})"
    reader = plans.get("image_reader_writer", "SimpleITKIO")
    if reader not in ARRAY_COMPATIBLE_READERS:
        raise RecokdError(f"{where} read images with {reader}; ReCoKD reads scans as nnU-Net's SimpleITKIO does, so "
                          "the teacher would see them in another orientation. Use a teacher planned with SimpleITKIO "
                          "(nnU-Net's default for NIfTI/NRRD/MHA).")
    try:
        plans_manager = PlansManager(plans)
        configuration = plans_manager.get_configuration(teacher.configuration)
        label_manager = plans_manager.get_label_manager(teacher.dataset_json)
        schemes = list(configuration.normalization_schemes)
    except Exception as error:  # a plans file from elsewhere: any failure means it is unusable
        raise RecokdError(f"{where} have no usable configuration '{teacher.configuration}' ({error!r}).") from error
    if label_manager.has_regions:
        raise RecokdError(f"{where} train regions (overlapping labels); ReCoKD distils label-map teachers only.")
    if configuration.previous_stage_name is not None:
        raise RecokdError(f"{where}: configuration '{teacher.configuration}' is a cascade stage; ReCoKD distils "
                          "single-stage teachers only.")
    if len(schemes) != teacher.channels:
        raise RecokdError(f"{where} normalise {len(schemes)} channel(s) but dataset.json names {teacher.channels}.")
    statistics = plans.get("foreground_intensity_properties_per_channel")
    for channel, scheme in enumerate(schemes):
        entry = statistics.get(str(channel)) if isinstance(statistics, dict) else None
        needed = CT_STATISTICS if scheme == "CTNormalization" else ()
        if not isinstance(entry, dict) or not all(_is_number(entry.get(key)) for key in needed):
            raise RecokdError(
                f"{where} cannot preprocess scans: channel {channel} is normalised with {scheme}, which needs the "
                f"intensity statistics nnU-Net fingerprints from the training data "
                f"(foreground_intensity_properties_per_channel['{channel}']{' with ' + ', '.join(needed) if needed else ''}), "
                "and the plans lack them. Export the teacher from its nnU-Net results folder, whose plans.json has them.")
    _probe(plans_manager, configuration, teacher, where)


def _probe(plans_manager, configuration, teacher: TeacherSource, where: str) -> None:
    """Run nnU-Net's preprocessor on a small volume: whatever it would fail on, it fails on here, before any file."""
    try:
        preprocessor = configuration.preprocessor_class(verbose=False)
        probe = np.random.default_rng(0).normal(100, 20, (teacher.channels, *_PROBE_SHAPE)).astype(np.float32)
        spacing = [1.0] * (3 - len(configuration.spacing)) + [float(s) for s in configuration.spacing]
        preprocessor.run_case_npy(probe, None, {"spacing": spacing}, plans_manager,
                                  configuration, teacher.dataset_json)
    except Exception as error:
        raise RecokdError(f"{where} cannot preprocess a scan with nnU-Net's preprocessor ({error!r}).") from error


def check_scans(cases: list[ScanCase], teacher: TeacherSource) -> None:
    """Every scan readable with the teacher's channel count; every label its scan's size, with known values."""
    known = _label_values(teacher.dataset_json)
    takes_ct = _normalisation(teacher) == ["CTNormalization"]
    for case in cases:
        size = _scan_size(case, teacher, takes_ct)
        if case.label is not None:
            _check_label(case, size, known)


def _scan_size(case: ScanCase, teacher: TeacherSource, takes_ct: bool) -> tuple[int, int, int] | None:
    """The spatial size (x, y, z) of the case's scan, checked against the teacher's channels (and, for a
    DICOM series, its modality against a CT teacher, ``takes_ct``); None for DICOM."""
    channels = teacher.channels
    if case.images[0].is_dir():
        found = dicom_series(case.images[0])
        if len(found) != 1:
            raise RecokdError(f"Case {case.name}: {case.images[0]} holds {len(found)} DICOM series; put each series "
                              "in a folder of its own.")
        if channels != 1:
            raise RecokdError(f"Case {case.name} is one DICOM series (one channel); the teacher takes {channels} "
                              "channels.")
        modality = _dicom_modality(found[0].files[0])
        if modality not in ("", "CT") and takes_ct:
            raise RecokdError(f"Case {case.name} is a {modality} series; the teacher takes CT (it normalises its input "
                              "in Hounsfield units). Give CT scans, or a teacher trained on this modality.")
        return None
    sizes, total = set(), 0
    for path in case.images:
        dimension, size, components = _header(path)
        if components != 1 or dimension not in (3, 4):
            raise RecokdError(f"Case {case.name}: {path.name} is not a 3D scalar volume ({dimension}D, {components} "
                              "component(s) per voxel).")
        total += size[3] if dimension == 4 else 1
        sizes.add(size[:3])
    if total != channels:
        layout = "one file per case" if channels == 1 else (
            f"one 4D file per case or nnU-Net's <case>_0000 .. <case>_{channels - 1:04d} files")
        raise RecokdError(f"Case {case.name} has {total} channel(s); the teacher takes {channels} "
                          f"({teacher.dataset_json.get('channel_names')}). Give {layout}.")
    if len(sizes) != 1:
        raise RecokdError(f"Case {case.name}: its channel files differ in size {sorted(sizes)}.")
    return sizes.pop()


def _dicom_modality(file: str) -> str:
    """The DICOM Modality (0008,0060) of a slice file, or "" when it has none."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return ""
    return reader.GetMetaData(_MODALITY_TAG).strip().upper() if reader.HasMetaDataKey(_MODALITY_TAG) else ""


def _normalisation(teacher: TeacherSource) -> list[str]:
    """The teacher's normalisation per channel (its plans passed :func:`check_teacher_can_preprocess`)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    return list(PlansManager(teacher.plans).get_configuration(teacher.configuration).normalization_schemes)


def _header(path) -> tuple[int, tuple[int, ...], int]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        reason = [line.strip() for line in str(error).splitlines() if line.strip()][-1:]
        raise RecokdError(f"Cannot read {path} as an image (truncated, or not NIfTI/NRRD/MHA?): "
                          f"{reason[0] if reason else error}") from error
    return reader.GetDimension(), tuple(reader.GetSize()), reader.GetNumberOfComponents()


def _check_label(case: ScanCase, size: tuple[int, int, int] | None, known: set[int]) -> None:
    image = read_image(case.label)
    if size is not None and tuple(image.GetSize()) != size:
        raise RecokdError(f"Case {case.name}: the label file {case.label.name} has size {image.GetSize()}, its scan "
                          f"{size}. Labels must be on their scan's voxel grid.")
    values = np.unique(sitk.GetArrayViewFromImage(image))
    if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        raise RecokdError(f"Case {case.name}: the label file {case.label.name} holds non-integer values; labels are "
                          "class numbers.")
    unknown = sorted(int(v) for v in values if int(v) not in known)
    if unknown:
        raise RecokdError(f"Case {case.name}: the label file {case.label.name} holds value(s) {unknown}, which the "
                          f"teacher does not know (its labels are {sorted(known)}). Relabel the file to the teacher's "
                          "label values.")


def _label_values(dataset_json: dict) -> set[int]:
    values: set[int] = set()
    for value in dataset_json["labels"].values():
        values.update(value if isinstance(value, list) else [value])
    return {int(v) for v in values}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
