"""Reading volumes (NIfTI, NRRD, MHA, DICOM series) and writing label maps, via SimpleITK.

Every failure a user can cause (missing path, unreadable or truncated file, NaN voxels
that ITK's NIfTI reader would hide (:mod:`recokd.inference.nifti_check`), 2D or vector
image, several DICOM series in one folder, an unwritable target) becomes a
:class:`RecokdError` naming the file and what to do. Writes are atomic: the file is written under a temporary name in the
target folder and moved into place with ``os.replace``, so an interrupted run never leaves a
partial output behind.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from recokd.errors import RecokdError
from recokd.inference.nifti_check import nifti_problem
from recokd.inference.seg_nrrd import segmentation_fields
from recokd.package.model import LabelInfo

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
# label-map formats: Slicer's segmentation file (.seg.nrrd, with segment names and colours) and
# plain label maps in the formats Slicer and ITK users exchange them
OUTPUT_SUFFIXES = {"nii.gz": ".nii.gz", "seg.nrrd": ".seg.nrrd", "nrrd": ".nrrd", "nii": ".nii", "mha": ".mha"}
_SERIES_DESCRIPTION_TAG = "0008|103e"


def matching_suffix(path: Path, suffixes) -> str | None:
    """The entry of ``suffixes`` that ``path``'s name ends with (case-insensitive, longest wins), else None."""
    name = path.name.lower()
    matches = [s for s in suffixes if name.endswith(s)]
    return max(matches, key=len) if matches else None


def strip_suffix(path: Path, suffixes) -> str:
    """``path``'s name without its image suffix: ``case_01.nii.gz`` -> ``case_01``."""
    suffix = matching_suffix(path, suffixes)
    return path.name[: -len(suffix)] if suffix else path.stem


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series in a folder: its UID, description and files in slice order."""

    uid: str
    description: str
    files: tuple[str, ...]


@contextmanager
def _itk_warnings_off() -> Iterator[None]:
    """Silence ITK's global warning output (GDCM warns on stderr for every folder without DICOM files)."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _series_ids(folder: Path) -> tuple[str, ...]:
    with _itk_warnings_off():
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def dicom_series(folder: Path) -> list[DicomSeries]:
    """The DICOM series GDCM finds directly in ``folder`` (not in subfolders)."""
    found = []
    for uid in _series_ids(folder):
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        header = sitk.ImageFileReader()
        header.SetFileName(files[0])
        try:
            header.ReadImageInformation()
            has_description = header.HasMetaDataKey(_SERIES_DESCRIPTION_TAG)
            description = header.GetMetaData(_SERIES_DESCRIPTION_TAG).strip() if has_description else ""
        except RuntimeError:
            description = ""
        found.append(DicomSeries(uid, description, files))
    return found


def _read_dicom(folder: Path, series: str | None) -> sitk.Image:
    found = dicom_series(folder)
    if not found:
        raise RecokdError(
            f"{folder} holds neither DICOM files nor images ending in {', '.join(IMAGE_SUFFIXES)}."
        )
    listing = "; ".join(f"{s.uid} ({s.description or 'no description'}, {len(s.files)} files)" for s in found)
    if series is None and len(found) > 1:
        raise RecokdError(
            f"{folder} holds {len(found)} DICOM series; choose one with --series UID: {listing}"
        )
    chosen = found[0] if series is None else next((s for s in found if s.uid == series), None)
    if chosen is None:
        raise RecokdError(f"DICOM series {series} is not in {folder}; it holds: {listing}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise RecokdError(f"Cannot read DICOM series {chosen.uid} in {folder}: {_itk_reason(error)}") from error


def is_dicom_folder(folder: Path) -> bool:
    """True when ``folder`` directly holds at least one DICOM series."""
    return bool(_series_ids(folder))


def read_image(path: Path, series: str | None = None) -> sitk.Image:
    """The volume in ``path``: an image file, or a folder holding one DICOM series (or ``series``)."""
    path = Path(path)
    if not path.exists():
        raise RecokdError(f"Input not found: {path}")
    if path.is_dir():
        return _read_dicom(path, series)
    problem = nifti_problem(path) if matching_suffix(path, (".nii", ".nii.gz")) else None
    if problem:
        raise RecokdError(f"{path}: {problem}")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise RecokdError(
            f"Cannot read {path} as an image (truncated or not a NIfTI/NRRD/MHA/DICOM file?): {_itk_reason(error)}"
        ) from error


def _itk_reason(error: Exception) -> str:
    """The last non-empty line of a SimpleITK error: its messages lead with lines of C++ context."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def volume_array(image: sitk.Image) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Voxels and spacing of a 3D (or channels-as-4th-axis 4D) scalar image.

    Returns ``(array, spacing)``: ``(z, y, x)`` for 3D, ``(c, z, y, x)`` for 4D (nnU-Net's
    ``SimpleITKIO`` reads 4D files the same way), and the spatial spacing in ITK order ``(x, y, z)``.
    The array is a read-only view of ``image``'s buffer (no copy of a large CT): keep ``image``
    referenced while the array is in use.
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise RecokdError(
            f"The image has {image.GetNumberOfComponentsPerPixel()} components per voxel (e.g. RGB); "
            "ReCoKD models take scalar (grey-value) volumes."
        )
    dimension = image.GetDimension()
    if dimension == 2:
        raise RecokdError(
            f"The image is 2D (size {image.GetSize()}); ReCoKD models segment 3D volumes. "
            "Give the whole series or volume instead of a single slice."
        )
    if dimension not in (3, 4):
        raise RecokdError(f"The image has {dimension} dimensions; expected a 3D volume.")
    return sitk.GetArrayViewFromImage(image), tuple(image.GetSpacing()[:3])


def labels_like(labels: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """``labels (z, y, x)`` as an image with ``reference``'s spatial geometry (its first 3 axes if 4D)."""
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(reference.GetSpacing()[:3])
    image.SetOrigin(reference.GetOrigin()[:3])
    direction = np.asarray(reference.GetDirection()).reshape(reference.GetDimension(), -1)[:3, :3]
    image.SetDirection(tuple(direction.ravel()))
    return image


def output_suffix(path: Path) -> str | None:
    """The :data:`OUTPUT_SUFFIXES` entry ``path`` ends with (``.seg.nrrd`` before ``.nrrd``), else None."""
    return matching_suffix(path, OUTPUT_SUFFIXES.values())


@contextmanager
def atomic_destination(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, so SimpleITK picks the same writer).

    It replaces ``path`` when the block ends normally and is removed on any exception,
    including a cancel or an interrupt.
    """
    suffix = output_suffix(path) or "".join(path.suffixes)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial{suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_labels(image: sitk.Image, path: Path, labels: list[LabelInfo], overwrite: bool = False) -> Path:
    """Write a label image to ``path`` atomically (``.seg.nrrd`` with Slicer's segment fields; others as plain label maps)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise RecokdError(f"{path} already exists; pass --overwrite to replace it.")
    if output_suffix(path) == ".seg.nrrd":
        image = sitk.Image(image)  # the caller's image keeps its metadata
        for key, value in segmentation_fields(labels, image.GetSize()).items():
            image.SetMetaData(key, value)
    try:
        with atomic_destination(path) as temporary:
            sitk.WriteImage(image, str(temporary), True)
            if not _reads_back_as(temporary, image):
                raise RecokdError(f"Cannot write {path}: the written file does not read back intact (is the disk "
                                  "full, or a file-size limit reached?); nothing was replaced.")
    except RuntimeError as error:
        raise RecokdError(f"Cannot write {path}: {_itk_reason(error)}") from error
    log.debug("wrote %s", path)
    return path


def _reads_back_as(written: Path, image: sitk.Image) -> bool:
    """Whether the file at ``written`` holds ``image``'s voxels.

    ITK's compressed NIfTI writer ignores a failed write: on a full disk it reports success
    and leaves a file cut short. So every label file is read back before it replaces anything.
    """
    try:
        back = read_image(written)
    except RecokdError:
        return False
    return back.GetSize() == image.GetSize() and np.array_equal(
        sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
