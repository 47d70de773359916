"""``recokd`` command lines, built from plain parameter objects (always argument lists).

A *launcher* is the argument list that starts the ``recokd`` program: normally
``[python, "-m", "recokd"]`` with Slicer's Python (:func:`recokd_launcher`). Everything
else in a command comes from the parameters, so the command a button starts is exactly the
command the tests check.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .labels import SegmentLabel, labels_from_dicts

DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "torch", "openvino", "onnxruntime")  # recokd segment --backend: the network's CPU runtime
STUDENT_WIDTHS = ("1", "1/2", "1/4", "1/8")
KD_MODES = ("recokd", "logit", "none")
MS_CA_FORMS = ("gc", "affinity")
#: What a student learns from: the teacher's preprocessed nnU-Net dataset, or a folder of scans (labels optional).
TRAINING_DATA = ("dataset", "scans")


def python_executable() -> str:
    """Slicer's Python launcher (``PythonSlicer``, on PATH inside Slicer), else this interpreter.

    Inside Slicer ``sys.executable`` is the application itself, not a Python interpreter:
    starting it with ``-m recokd`` would open a second Slicer. So when ``PythonSlicer`` is
    missing and this process is a Slicer application, that is an error, as in
    ``slicer.util._executePythonModule``.
    """
    launcher = shutil.which("PythonSlicer")
    if launcher:
        return launcher
    if Path(sys.executable).stem.lower().startswith("slicer"):
        raise FileNotFoundError(f"PythonSlicer executable not found next to {sys.executable} or on PATH; "
                                "reinstall Slicer")
    return sys.executable


def recokd_launcher(python: str | None = None) -> list[str]:
    return [python or python_executable(), "-m", "recokd"]


def _choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class SegmentParameters:
    """``recokd segment``: ``model`` is an installed model's name or a package path; ``input``
    and ``output`` are files, or folders for a batch."""

    model: str
    input: Path
    output: Path
    device: str = "auto"
    fast: bool = False
    backend: str = "auto"

    def __post_init__(self) -> None:
        if not str(self.model).strip():
            raise ValueError("choose a model")
        _choice("device", self.device, DEVICES)
        _choice("backend", self.backend, BACKENDS)


def segment_command(launcher: Sequence[str], parameters: SegmentParameters) -> list[str]:
    command = [
        *launcher, "segment",
        "-m", str(parameters.model),
        "-i", str(parameters.input),
        "-o", str(parameters.output),
        "--device", parameters.device,
        "--backend", parameters.backend,
    ]
    if parameters.fast:
        command.append("--fast")
    return [*command, "--progress", "json", "--overwrite"]


@dataclass(frozen=True)
class DistillParameters:
    """``recokd distill``: the distillation panel's choices. The student learns from ``dataset``
    (the teacher's preprocessed nnU-Net dataset) or from the scans in ``images`` (label files, where
    there are any, in ``labels``; the teacher labels the rest). ``gpus`` > 1 runs one process per
    GPU through ``torch.distributed.run``."""

    teacher: Path
    dataset: str
    work_dir: Path
    images: Path | None = None
    labels: Path | None = None
    width: str = "1/4"
    fold: int = 0
    epochs: int = 250
    mode: str = "recokd"
    ms_ca: str = "gc"
    kd_weight: float = 0.01
    device: str = "auto"
    gpus: int = 1
    resume: bool = False

    def __post_init__(self) -> None:
        if not str(self.teacher).strip() or Path(self.teacher) == Path("."):
            raise ValueError("choose the teacher's nnU-Net results folder")
        if self.images is None:
            if not str(self.dataset).strip():
                raise ValueError("enter the dataset (nnU-Net id or name)")
            if self.labels is not None:
                raise ValueError("a labels folder goes with a scans folder, not with a dataset")
        elif str(self.dataset).strip():
            raise ValueError("give either a dataset or a scans folder, not both")
        elif not str(self.images).strip() or Path(self.images) == Path("."):
            raise ValueError("choose the folder of scans")
        elif self.labels is not None and (not str(self.labels).strip() or Path(self.labels) == Path(".")):
            raise ValueError("choose the labels folder, or learn from the teacher's labels only")
        if not str(self.work_dir).strip() or Path(self.work_dir) == Path("."):
            raise ValueError("choose a work folder for the distillation")
        _choice("student width", self.width, STUDENT_WIDTHS)
        _choice("KD mode", self.mode, KD_MODES)
        _choice("MS-CA form", self.ms_ca, MS_CA_FORMS)
        _choice("device", self.device, DEVICES)
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1; got {self.epochs}")
        if self.fold < 0:
            raise ValueError(f"fold must be 0 or more; got {self.fold}")
        if self.kd_weight < 0:
            raise ValueError(f"KD weight must be 0 or more; got {self.kd_weight}")
        if self.gpus < 1:
            raise ValueError(f"GPU count must be at least 1; got {self.gpus}")
        if self.gpus > 1 and self.device == "cpu":
            raise ValueError("several GPUs need device 'auto' or 'cuda', not 'cpu'")


def distill_command(launcher: Sequence[str], parameters: DistillParameters) -> list[str]:
    """``[*launcher, "distill", ...]``; with several GPUs the launcher's program runs under
    ``python -m torch.distributed.run --standalone --nproc_per_node N`` instead."""
    arguments = [
        "distill",
        "--teacher", str(parameters.teacher),
        *(["--dataset", str(parameters.dataset)] if parameters.images is None else ["--images", str(parameters.images)]),
        *(["--labels", str(parameters.labels)] if parameters.labels is not None else []),
        "--width", parameters.width,
        "--fold", str(parameters.fold),
        "--epochs", str(parameters.epochs),
        "--mode", parameters.mode,
        "--ms-ca", parameters.ms_ca,
        "--kd-weight", repr(float(parameters.kd_weight)),
        "--device", parameters.device,
        "--work-dir", str(parameters.work_dir),
    ]
    if parameters.resume:
        arguments.append("--resume")
    arguments += ["--progress", "json"]
    if parameters.gpus == 1:
        return [*launcher, *arguments]
    python, *program = launcher
    return [
        python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(parameters.gpus),
        *program, *arguments,
    ]


def models_list_command(launcher: Sequence[str]) -> list[str]:
    return [*launcher, "models", "list", "--json"]


def models_add_command(launcher: Sequence[str], package: Path, overwrite: bool = False) -> list[str]:
    """``models add``; ``overwrite`` replaces an installed model of the same name (a re-distilled student)."""
    return [*launcher, "models", "add", str(package), *(["--overwrite"] if overwrite else [])]


@dataclass(frozen=True)
class ModelInfo:
    """An installed model package as ``recokd models list --json`` describes it."""

    name: str
    path: str
    labels: tuple[SegmentLabel, ...]
    description: str = ""
    bundled: bool = False  # shipped with the extension, read-only


def parse_models_list(stdout_lines: Sequence[str]) -> list[ModelInfo]:
    """Parse the JSON list ``recokd models list --json`` prints (possibly over several lines)."""
    text = "\n".join(stdout_lines).strip()
    try:
        items = json.loads(text)
    except ValueError as error:
        raise ValueError(f"'recokd models list --json' printed something that is not JSON: {text[:200]!r}") from error
    if not isinstance(items, list):
        raise ValueError(f"'recokd models list --json' should print a list, got {type(items).__name__}")
    return [
        ModelInfo(
            name=str(item["name"]),
            path=str(item["path"]),
            labels=tuple(labels_from_dicts(item.get("labels", []))),
            description=str(item.get("description", "")),
            bundled=bool(item.get("bundled", False)),
        )
        for item in items
    ]
