"""Compare model packages on the same test cases: accuracy, size, cost and speed, one model at a time.

:func:`evaluate_models` is the one evaluation the demo (phantom) and the benchmarks
(Hippocampus) share. Each package is loaded once and segments every case with the project's
:class:`~recokd.inference.predictor.StudentPredictor` (nnU-Net's preprocessing and sliding
window); the labels come back in the reference's geometry and are scored with
:mod:`recokd.evaluate.metrics`. Latency is the wall clock around the prediction call only
(no file reading, no scoring), after one untimed warm-up prediction that pays for lazy
initialisation (allocator pools, cuDNN autotuning, first-touch of the weights).

:func:`latency_and_memory_on_volume` measures what a user of a large scan feels: CPU time and
peak resident memory for one CT-sized volume, each model in a fresh process of its own,
because a process's peak RSS is a high-water mark that a previous model would have raised.

Results are JSON-ready: undefined values (a class absent from every case) are ``None``.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import SimpleITK as sitk
import torch

from recokd.data.phantom import PhantomConfig, generate_case
from recokd.device import resolve_device
from recokd.errors import RecokdError
from recokd.evaluate.complexity import plans_complexity
from recokd.evaluate.metrics import case_metrics, nan_mean
from recokd.evaluate.timing import timed
from recokd.inference.image_io import IMAGE_SUFFIXES, read_image, strip_suffix
from recokd.inference.predictor import StudentPredictor
from recokd.package.archive import load_package

log = logging.getLogger(__name__)

ModelProgress = Callable[[str, int, int], None]  # (model key, cases done, cases in all)
CT_VOLUME_SHAPE = (120, 512, 512)  # (z, y, x): a typical abdominal CT series


def evaluate_models(
    models: dict[str, Path],
    cases: list[tuple[Path, Path]],
    device: str | torch.device = "cpu",
    threads: int | None = None,
    mirroring: bool = True,
    progress: ModelProgress | None = None,
    backend: str = "auto",
) -> dict[str, dict]:
    """Predict and score every ``(image, reference label)`` case with every model package.

    Returns ``{key: entry}`` in the order of ``models``; an entry holds ``params``, ``flops``
    (one patch, :mod:`recokd.evaluate.complexity`), ``mean_dice`` (mean over classes of the
    per-class means), ``dice_per_class`` and ``hd95_per_class`` (mean over cases, by label
    name), ``mean_hd95_mm``, ``cpu_latency_s`` or ``gpu_latency_s`` (mean seconds per case on
    ``device``; the other is ``None``) and ``cases``: per case its latency, Dice, HD95 and
    reference volume per structure (the points of the small-structure analysis), and the
    ``backend`` that ran the network (:mod:`recokd.inference.backends`).
    """
    if not cases:
        raise RecokdError("No test cases to evaluate on.")
    device = resolve_device(str(device))
    loaded = [(_case_id(label), read_image(image), read_image(label)) for image, label in cases]
    return {key: _evaluate_one(key, Path(path), loaded, device, threads, mirroring, progress, backend)
            for key, path in models.items()}


def _evaluate_one(key: str, path: Path, cases: list[tuple[str, sitk.Image, sitk.Image]], device: torch.device,
                  threads: int | None, mirroring: bool, progress: ModelProgress | None, backend: str) -> dict:
    package = load_package(path)
    predictor = StudentPredictor(package, device=device, mirroring=mirroring, threads=threads, backend=backend)
    complexity = plans_complexity(package.plans, package.dataset_json, package.configuration)
    names = {label.value: label.name for label in package.labels}
    log.info("%s: %s, %d parameters, %d cases on %s", key, package.name, complexity.parameters, len(cases), device)

    predictor.predict_image(cases[0][1])  # warm-up, not timed
    per_case = []
    for done, (case_id, image, reference) in enumerate(cases, start=1):
        prediction, latency = timed(lambda image=image: predictor.predict_image(image), device)
        metrics = case_metrics(prediction, reference, list(names))
        per_case.append({
            "case": case_id,
            "latency_s": latency,
            "dice": {names[v]: _finite_or_none(d) for v, d in metrics.dice.items()},
            "hd95_mm": {names[v]: _finite_or_none(d) for v, d in metrics.hd95_mm.items()},
            "volume_ml": {names[v]: d for v, d in metrics.volume_ml.items()},
        })
        if progress is not None:
            progress(key, done, len(cases))

    dice = {name: _class_mean(per_case, "dice", name) for name in names.values()}
    hd95 = {name: _class_mean(per_case, "hd95_mm", name) for name in names.values()}
    latency = sum(c["latency_s"] for c in per_case) / len(per_case)
    return {
        "package": package.name,
        "params": complexity.parameters,
        "flops": complexity.flops,
        "flops_input_shape": list(complexity.input_shape),
        "mean_dice": _finite_or_none(nan_mean(dice.values())),
        "dice_per_class": dice,
        "hd95_per_class": hd95,
        "mean_hd95_mm": _finite_or_none(nan_mean(hd95.values())),
        "cpu_latency_s": latency if device.type == "cpu" else None,
        "gpu_latency_s": latency if device.type == "cuda" else None,
        "mirroring": predictor.mirroring,
        "backend": predictor.backend,
        "cases": per_case,
    }


def latency_and_memory_on_volume(
    models: dict[str, Path],
    shape: Sequence[int] = CT_VOLUME_SHAPE,
    threads: int | None = None,
    mirroring: bool = False,
    tile_step: float = 0.5,
    seed: int = 0,
    volume: Path | None = None,
) -> dict[str, dict]:
    """CPU latency and peak RSS of each model on one CT-sized phantom volume, each in a fresh process.

    The volume is a synthetic CT phantom (:mod:`recokd.data.phantom`) of ``shape`` ``(z, y, x)``,
    written once to ``volume`` (default: a temporary file) and given to every model at the
    model's own target spacing, so the network sees exactly ``shape`` voxels and no resampling
    changes the workload between models. ``mirroring`` is off by default: with it on, a
    teacher's sliding window over such a volume takes 8 times as long on a CPU, and the ratio
    between models stays the same. ``tile_step`` is the sliding window's step (nnU-Net's 0.5,
    or up to 1.0 for fewer tiles when a teacher with a small patch would take too long). Returns ``{key: {"ct_cpu_latency_s", "peak_rss_mb"}}``
    (1 MB = 2^20 bytes); the peak includes the interpreter, PyTorch and the loaded volume,
    as in any real process.
    """
    shape = tuple(int(s) for s in shape)
    with tempfile.TemporaryDirectory(prefix="recokd-volume-") as scratch:
        path = Path(volume) if volume is not None else Path(scratch) / "ct_phantom.nrrd"
        if not path.is_file():
            write_ct_phantom(path, shape, seed)
        results = {}
        for key, package in models.items():
            results[key] = _probe_in_subprocess(Path(package), path, threads, mirroring, tile_step)
            log.info("%s on %s voxels: %.1f s, peak RSS %.0f MB", key, "x".join(map(str, shape)),
                     results[key]["ct_cpu_latency_s"], results[key]["peak_rss_mb"])
    return results


def write_ct_phantom(path: Path, shape: Sequence[int], seed: int = 0) -> Path:
    """One phantom case of ``shape`` ``(z, y, x)`` written to ``path`` (the labels are not needed)."""
    log.info("Generating a %s CT phantom volume", "x".join(map(str, shape)))
    image, _ = generate_case(seed, 0, PhantomConfig(shape=tuple(shape))).to_sitk()
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), False)
    return path


def _probe_in_subprocess(package: Path, volume: Path, threads: int | None, mirroring: bool, tile_step: float) -> dict:
    command = [sys.executable, "-m", "recokd.evaluate.volume_probe", str(package), str(volume),
               "--tile-step", str(tile_step)]
    if threads is not None:
        command += ["--threads", str(threads)]
    if mirroring:
        command.append("--mirroring")
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = finished.stdout.strip().splitlines()
    if finished.returncode != 0 or not lines:
        tail = "\n".join(finished.stderr.strip().splitlines()[-5:])
        raise RecokdError(f"Measuring {package.name} on the CT-sized volume failed (exit {finished.returncode}):\n{tail}")
    return json.loads(lines[-1])


def _case_id(label: Path) -> str:
    return strip_suffix(Path(label), IMAGE_SUFFIXES)


def _class_mean(per_case: list[dict], metric: str, name: str) -> float | None:
    return _finite_or_none(nan_mean(case[metric][name] for case in per_case))


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
