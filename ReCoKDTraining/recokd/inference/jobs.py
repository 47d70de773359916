"""Which label file to write for which input: one file, a DICOM series folder, or a folder batch.

Everything that can be refused without reading voxels is refused here, before the model is
loaded: a missing input, an empty folder, a file-vs-folder mismatch, two inputs that would
write the same output, an output that would replace its input, existing outputs (unless
overwriting or continuing), and an output folder that cannot be created or written.

A batch can be sharded the way nnU-Net's ``-part_id``/``-num_parts`` shard a cohort: part
``K`` of ``N`` takes every N-th input of the sorted list, starting at the K-th, so the parts
of a job array cover every case exactly once with no coordinator. Outputs are written
atomically, so with ``continue_existing`` a rerun part skips the cases already written and
redoes only the rest.
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
    source: Path, destination: Path, output_format: str | None = None, overwrite: bool = False, series: str | None = None,
    part: int = 0, num_parts: int = 1, continue_existing: bool = False,
) -> list[SegmentJob]:
    """The jobs for ``recokd segment -i source -o destination``, with the output folders created.

    ``destination`` is a file when it ends in one of :data:`OUTPUT_SUFFIXES` (``.nii.gz``,
    ``.seg.nrrd``, ``.nrrd``, ``.nii``, ``.mha``), else a folder that receives
    ``<input name><suffix>`` per input; the suffix follows ``output_format`` (default
    ``"nii.gz"``). Only part ``part`` of ``num_parts`` is kept (every ``num_parts``-th input from
    the ``part``-th); with ``continue_existing`` the jobs whose output exists are dropped.
    """
    source, destination = Path(source), Path(destination)
    if num_parts < 1 or not 0 <= part < num_parts:
        raise RecokdError(f"--part must be in 0..{num_parts - 1} for --num-parts {num_parts}; got {part}.")
    if overwrite and continue_existing:
        raise RecokdError("--overwrite and --continue contradict each other: choose one.")
    if not source.exists():
        raise RecokdError(f"Input not found: {source}")
    file_suffix = output_suffix(destination)
    if output_format is not None and file_suffix is not None and OUTPUT_SUFFIXES[output_format] != file_suffix:
        raise RecokdError(f"--format {output_format} does not match the output file name {destination.name}.")
    if file_suffix is None and destination.suffix.lower() in (".gz", ".nhdr", ".mhd", ".img", ".hdr"):
        raise RecokdError(f"Output {destination.name}: label files are written as "
                          f"{', '.join(OUTPUT_SUFFIXES.values())}.")

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
    _check_distinct(jobs)
    jobs = jobs[part::num_parts]
    if continue_existing:
        jobs = [job for job in jobs if not job.output.is_file()]
    _check_outputs(jobs, overwrite)
    return jobs


def _check_distinct(jobs: list[SegmentJob]) -> None:
    """Refuse two inputs that would write one output (checked over all parts: a collision is one in every shard)."""
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.output in seen:
            raise RecokdError(f"{seen[job.output].name} and {job.input.name} would both be written to {job.output}.")
        seen[job.output] = job.input


def _check_outputs(jobs: list[SegmentJob], overwrite: bool) -> None:
    for job in jobs:
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
