"""The steps of "segment this volume" and "segment these files", ready for a :class:`ProcessRunner`.

A job owns a private temporary folder (input file, raw label output), builds the
``recokd segment`` step and imports its result; :meth:`cleanup` removes the folder and goes
into the runner's ``on_finished`` so it runs however the run ends.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .commands import SegmentParameters, segment_command
from .labels import labels_from_dicts
from .runner import Step, StepOutcome
from .segmentations import commit_segmentation, prepare_segmentation_from_file, write_segmentation_file
from .terminology import register_custom_terminology
from .volumes import write_volume

logger = logging.getLogger(__name__)

NIFTI_SUFFIX = ".nii.gz"
OUTPUT_FORMATS = ("seg.nrrd", "nii.gz")


def _result_outputs(outcome: StepOutcome) -> list[Path]:
    outputs = [Path(item["output"]) for item in outcome.result.get("outputs", [])]
    if not outputs:
        raise ValueError("the segmentation reported no output files")
    missing = [str(path) for path in outputs if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"reported output files do not exist: {', '.join(missing)}")
    return outputs


@contextmanager
def _cleaned_up_on_error(job) -> Iterator[None]:
    """A job refused in its constructor removes the temporary folder it had already made."""
    try:
        yield
    except BaseException:
        job.cleanup()
        raise


class SegmentVolumeJob:
    """Segment one volume node: write it to NRRD, run ``recokd segment``, import the labels as a
    segmentation node next to the volume (new, or replacing ``output_node``'s segments).
    ``terminologies``: Slicer's terminologies logic, told the model's custom structures (if any)."""

    def __init__(
        self,
        launcher: Sequence[str],
        scene,
        volume_node,
        model: str,
        device: str = "auto",
        fast: bool = False,
        output_node=None,
        temp_root: Path | None = None,
        backend: str = "auto",
        terminologies=None,
    ) -> None:
        self.launcher = list(launcher)
        self.scene = scene
        self.terminologies = terminologies
        self.volume_node = volume_node
        self.output_node = output_node
        self.work_dir = Path(tempfile.mkdtemp(prefix="recokd-segment-", dir=temp_root))
        with _cleaned_up_on_error(self):
            self.parameters = SegmentParameters(
                model=model,
                input=self.work_dir / "input.nrrd",
                output=self.work_dir / f"labels{NIFTI_SUFFIX}",
                device=device,
                fast=fast,
                backend=backend,
            )

    def prepare(self) -> Step:
        """Write the input file and return the segmentation step (its importer adds the node)."""
        write_volume(self.volume_node, self.parameters.input)
        return Step(
            command=segment_command(self.launcher, self.parameters),
            description="Segmentation",
            importer=self.import_result,
            expects_result=True,
        )

    def import_result(self, outcome: StepOutcome):
        """Build the segmentation off-scene, then add it to the scene (the only scene change)."""
        labels = labels_from_dicts(outcome.result.get("labels", []))
        prepared = prepare_segmentation_from_file(_result_outputs(outcome)[0], labels, self.volume_node)
        if self.terminologies is not None:
            register_custom_terminology(labels, self.terminologies)
        return commit_segmentation(
            prepared, self.scene, self.output_node, name=f"{self.volume_node.GetName()} segmentation"
        )

    def cleanup(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)


class SegmentFilesJob:
    """Segment image files (a folder, or a list of files) in one ``recokd segment`` process and
    write one ``.seg.nrrd`` (segments with names, colours, terminology) or ``.nii.gz`` label
    image per input into ``output_folder``."""

    def __init__(
        self,
        launcher: Sequence[str],
        inputs: Path | Sequence[Path],
        output_folder: Path,
        model: str,
        device: str = "auto",
        fast: bool = False,
        output_format: str = "seg.nrrd",
        temp_root: Path | None = None,
        backend: str = "auto",
    ) -> None:
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}; got {output_format!r}")
        self.launcher = list(launcher)
        if isinstance(inputs, (str, os.PathLike)):
            inputs = Path(inputs)
            self.inputs = [inputs] if inputs.is_file() else inputs
        else:
            self.inputs = [Path(p) for p in inputs]
        self.output_folder = Path(output_folder)
        self.output_format = output_format
        self.work_dir = Path(tempfile.mkdtemp(prefix="recokd-batch-", dir=temp_root))
        label_folder = self.output_folder if output_format == "nii.gz" else self.work_dir / "labels"
        with _cleaned_up_on_error(self):
            self.parameters = SegmentParameters(model, self._input_path(), label_folder, device, fast, backend)

    def _input_path(self) -> Path:
        if isinstance(self.inputs, Path):
            if not self.inputs.is_dir():
                raise FileNotFoundError(f"input folder {self.inputs} does not exist")
            return self.inputs
        if not self.inputs:
            raise ValueError("no input files")
        return self.work_dir / "inputs"

    def _stage_inputs(self) -> None:
        """Gather listed files into one folder (hard links where possible, else copies)."""
        folder = self.parameters.input
        folder.mkdir()
        for index, source in enumerate(self.inputs):
            if not source.is_file():
                raise FileNotFoundError(f"input file {source} does not exist")
            target = folder / source.name
            if target.exists():
                target = folder / f"{index:04d}_{source.name}"
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)

    def prepare(self) -> Step:
        if isinstance(self.inputs, list):
            self._stage_inputs()
        self.output_folder.mkdir(parents=True, exist_ok=True)
        self.parameters.output.mkdir(parents=True, exist_ok=True)
        return Step(
            command=segment_command(self.launcher, self.parameters),
            description="Batch segmentation",
            importer=self.import_result,
            expects_result=True,
        )

    def import_result(self, outcome: StepOutcome) -> list[Path]:
        """The written files; label images are converted to ``.seg.nrrd`` when asked for."""
        outputs = _result_outputs(outcome)
        if self.output_format == "nii.gz":
            return outputs
        labels = labels_from_dicts(outcome.result.get("labels", []))
        written = []
        for label_file in outputs:
            name = label_file.name.removesuffix(NIFTI_SUFFIX).removesuffix(".nrrd")
            prepared = prepare_segmentation_from_file(label_file, labels)
            written.append(write_segmentation_file(prepared, self.output_folder / f"{name}.seg.nrrd"))
            logger.info("Wrote %s", written[-1])
        return written

    def cleanup(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)
