"""Which label file to write for which input: one file, a DICOM series folder, or a folder batch.

Everything that can be refused without reading voxels is refused here, before the model is
loaded: a missing input, an empty folder, a file-vs-folder mismatch, two inputs that would
write the same output, an output that would replace its input, existing outputs (unless
overwriting), and an output folder that cannot be created or written.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from recokd.errors import RecokdError
from recokd.inference.image_io import (
    IMAGE_SUFFIXES,
    OUTPUT_SUFFIXES,
    is_dicom_folder,
    matching_suffix,
    output_suffix,
    strip_suffix,
)


@dataclass(frozen=True)
class SegmentJob:
    """Segment the volume at ``input`` (a file or a DICOM series folder) into the label file ``output``."""

    input: Path
    output: Path


def _folder_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted; segmentation files (``.seg.nrrd``) are not inputs."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and matching_suffix(p, IMAGE_SUFFIXES) and not p.name.lower().endswith(".seg.nrrd")
    )


def plan_jobs(
    source: Path, destination: Path, output_format: str | None = None, overwrite: bool = False, series: str | None = None
) -> list[SegmentJob]:
    """The jobs for ``recokd segment -i source -o destination``, with the output folders created.

    ``destination`` is a file when it ends in ``.nii.gz`` or ``.seg.nrrd``, else a folder that
    receives ``<input name><suffix>`` per input; the suffix follows ``output_format``
    (``"nii.gz"`` or ``"seg.nrrd"``, default ``"nii.gz"``).
    """
    source, destination = Path(source), Path(destination)
    if not source.exists():
        raise RecokdError(f"Input not found: {source}")
    file_suffix = output_suffix(destination)
    if output_format is not None and file_suffix is not None and OUTPUT_SUFFIXES[output_format] != file_suffix:
        raise RecokdError(f"--format {output_format} does not match the output file name {destination.name}.")
    if destination.suffix and file_suffix is None and destination.suffix.lower() in (".nii", ".nrrd", ".gz", ".mha"):
        raise RecokdError(f"Output {destination.name}: label files are written as .nii.gz or .seg.nrrd.")

    dicom = source.is_dir() and is_dicom_folder(source)
    if series is not None and not dicom:
        raise RecokdError(f"--series selects a series of a DICOM folder; {source} is not one.")
    if source.is_dir() and not dicom:
        inputs = _folder_images(source)
        if not inputs:
            raise RecokdError(
                f"{source} holds no DICOM series and no images ending in {', '.join(IMAGE_SUFFIXES)}."
            )
        if file_suffix is not None:
            raise RecokdError(f"{source} is a folder of {len(inputs)} image(s): -o must be a folder, not a file name.")
        names = [strip_suffix(p, IMAGE_SUFFIXES) for p in inputs]
    else:
        inputs = [source]
        names = [source.name if source.is_dir() else strip_suffix(source, IMAGE_SUFFIXES)]

    if file_suffix is not None:
        jobs = [SegmentJob(source, destination)]
    else:
        suffix = OUTPUT_SUFFIXES[output_format or "nii.gz"]
        jobs = [SegmentJob(path, destination / f"{name}{suffix}") for path, name in zip(inputs, names)]
    _check_outputs(jobs, overwrite)
    return jobs


def _check_outputs(jobs: list[SegmentJob], overwrite: bool) -> None:
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.output in seen:
            raise RecokdError(f"{seen[job.output].name} and {job.input.name} would both be written to {job.output}.")
        seen[job.output] = job.input
        if job.output.resolve() == job.input.resolve():
            raise RecokdError(f"The output {job.output} would replace its own input; choose another output.")
        if job.output.is_dir():
            raise RecokdError(f"The output {job.output} is a folder; give a file name or a different folder.")
    existing = [job.output for job in jobs if job.output.exists()]
    if existing and not overwrite:
        shown = ", ".join(str(p) for p in existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise RecokdError(f"Output already exists: {shown}. Pass --overwrite to replace it.")
    for folder in sorted({job.output.parent for job in jobs}):
        _prepare_folder(folder)


def _prepare_folder(folder: Path) -> None:
    """Create ``folder`` and prove it takes files (``os.access`` is unreliable on network drives and for root)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise RecokdError(f"Cannot write to the output folder {folder}: {error.strerror or error}.") from error
