"""CPU runtime of the network and of the whole segmentation, per backend, measured in one run.

Two measurements on the machine at hand, with ``--threads`` CPU threads (default 2, a laptop):

1. **Forward pass.** A CT-plan nnU-Net (6 stages, 32-320 features, one 128^3 patch: what nnU-Net
   plans for abdominal CT at 3d_fullres) and its x1/4 student, one patch per call, on every
   installed backend (:mod:`recokd.inference.backends`): median seconds over ``--repeats``
   calls after one warm-up, the speed-up against PyTorch eager, and the share of voxels whose
   argmax equals PyTorch's.
2. **End to end.** The student segments a CT-sized volume (512 x 512 x 120 and x 300 slices at
   0.8 x 0.8 x 2.5 mm, written to a NIfTI file first), each run in a fresh process: read,
   preprocessing (to the plans' 1.5 mm), prediction (no mirroring: the ``--fast`` setting),
   resampling back and writing, timed separately from the predictor's progress events; plus
   the process's peak resident memory. Three runs per volume: PyTorch with nnU-Net's scipy
   resampling back (the path before the CPU work), PyTorch, and the fastest backend, both with
   the PyTorch resampling (the default); and the share of voxels whose label the two
   resamplings agree on.

The networks have seeded random weights in a package built from the shipped phantom
teacher's plans (its CT normalisation and five structures): time and memory depend on the
architecture, not on the weights, and no CT-plan model is shipped. Writes
``cpu_runtime.json``, ``.md`` and ``.png`` into ``--out-dir``.

    python ReCoKDTraining/benchmarks/cpu_runtime.py --out-dir ReCoKDTraining/benchmarks/results
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

CT_ARCHITECTURE = {
    "n_stages": 6,
    "features_per_stage": [32, 64, 128, 256, 320, 320],
    "kernel_sizes": [[3, 3, 3]] * 6,
    "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5,
    "n_conv_per_stage": [2] * 6,
    "n_conv_per_stage_decoder": [2] * 5,
}
CT_PATCH = [128, 128, 128]
CT_SPACING = [1.5, 1.5, 1.5]
VOLUME_SPACING = (0.8, 0.8, 2.5)  # (x, y, z) mm: a typical abdominal CT series
BEFORE = "torch, nnU-Net resampling"  # the end-to-end path before the CPU work: PyTorch and scipy
TEMPLATE = Path(__file__).resolve().parents[2] / "Resources" / "Models" / "phantom-teacher.recokd.zip"


def ct_plan_package(template: Path, width: Fraction, seed: int = 0):
    """A package with the CT plan at ``width`` (1: the teacher, 1/4: its student) and seeded random weights."""
    import torch

    from recokd.nnunet.network import build_network
    from recokd.nnunet.student_plans import derive_student_plans
    from recokd.package.archive import load_package
    from recokd.package.model import ModelPackage

    base = load_package(template)
    plans = copy.deepcopy(base.plans)
    configuration = plans["configurations"][base.configuration]
    configuration["architecture"]["arch_kwargs"].update(copy.deepcopy(CT_ARCHITECTURE))
    configuration.update(patch_size=list(CT_PATCH), spacing=list(CT_SPACING))
    plans["transpose_forward"] = plans["transpose_backward"] = [0, 1, 2]
    if width != 1:
        plans = derive_student_plans(plans, base.configuration, width)
    torch.manual_seed(seed)
    network = build_network(plans, base.dataset_json, base.configuration)
    return ModelPackage(plans, base.dataset_json, base.configuration, base.labels, network.state_dict(),
                        {"name": f"ct-plan-width-{width}".replace("/", "of")}, mirror_axes=(0, 1, 2))


def forward_times(package, backends: list[str], threads: int, repeats: int) -> dict:
    """Median forward seconds of one 128^3 patch per backend, and argmax agreement with PyTorch's output."""
    import numpy as np
    import torch

    from recokd.evaluate.complexity import count_parameters
    from recokd.inference.backends import make_forward
    from recokd.nnunet.network import build_network

    torch.set_num_threads(threads)
    network = build_network(package.plans, package.dataset_json, package.configuration)
    network.load_state_dict(package.state_dict)
    network.eval()
    patch = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 1, *CT_PATCH)).astype(np.float32))
    results, reference = {}, None
    for backend in backends:
        forward = make_forward(backend, network, package, (1, *CT_PATCH), threads)
        with torch.inference_mode():
            output = forward(patch)  # warm-up (and the output compared below)
            seconds = []
            for _ in range(repeats):
                started = time.perf_counter()
                forward(patch)
                seconds.append(time.perf_counter() - started)
        labels = output.argmax(1)
        reference = labels if reference is None else reference
        results[backend] = {"seconds": round(statistics.median(seconds), 4), "all_seconds": [round(s, 4) for s in seconds],
                            "argmax_agreement_with_torch": float((labels == reference).float().mean())}
    for backend in backends:
        results[backend]["speedup_vs_torch"] = round(results["torch"]["seconds"] / results[backend]["seconds"], 3)
    return {"parameters": count_parameters(network), "backends": results}


def end_to_end_worker(spec: dict) -> dict:
    """One fresh process: read the volume file, segment it with the student, write the labels; stage seconds."""
    import SimpleITK as sitk

    from recokd.inference.image_io import read_image, write_labels
    from recokd.inference.memory import peak_rss_bytes
    from recokd.inference.predictor import StudentPredictor

    package = ct_plan_package(Path(spec["template"]), Fraction(1, 4))
    predictor = StudentPredictor(package, device="cpu", mirroring=False, threads=spec["threads"], backend=spec["backend"],
                                 resampling=spec["resampling"])
    warm = sitk.Image([64, 64, 40], sitk.sitkInt16)
    warm.SetSpacing(VOLUME_SPACING)
    predictor.predict_image(warm)  # untimed: first-call allocations and kernel choices
    marks: list[tuple[str, float]] = []
    started = time.perf_counter()
    image = read_image(Path(spec["volume"]))
    marks.append(("preprocessing", time.perf_counter()))

    def on_progress(event) -> None:
        if event.stage != marks[-1][0]:
            marks.append((event.stage, time.perf_counter()))

    labels = predictor.predict_image(image, progress=on_progress)
    marks.append(("writing", time.perf_counter()))
    write_labels(labels, Path(spec["output"]), package.labels, overwrite=True)
    finished = time.perf_counter()
    bounds = [("reading", started), *marks, ("end", finished)]
    stages = {name: round(bounds[i + 1][1] - t, 3) for i, (name, t) in enumerate(bounds[:-1])}
    return {"backend": predictor.backend, "resampling": predictor.resampling, "stages_seconds": stages, "total_seconds": round(finished - started, 3),
            "peak_rss_bytes": peak_rss_bytes()}


def _in_fresh_process(spec: dict) -> dict:
    result = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"end-to-end worker {spec['run']} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_volume(path: Path, slices: int) -> None:
    import SimpleITK as sitk
    from inference_memory import ct_like_volume

    image = sitk.GetImageFromArray(ct_like_volume((512, 512, slices)))
    image.SetSpacing(VOLUME_SPACING)
    sitk.WriteImage(image, str(path), True)


def label_agreement(first: Path, second: Path) -> float:
    """The share of voxels with the same label in two label files of one volume."""
    import numpy as np
    import SimpleITK as sitk

    a, b = (sitk.GetArrayViewFromImage(sitk.ReadImage(str(path))) for path in (first, second))
    return float(np.mean(a == b))


def markdown(result: dict) -> str:
    lines = [f"# CPU runtime ({result['settings']['threads']} threads, {result['machine']['cpu']})", "",
             "## Forward pass, one 128^3 patch (CT plan)", "",
             "| model | parameters | backend | seconds | speed-up vs torch | argmax = torch |", "|---|---|---|---|---|---|"]
    for model, measured in result["forward"].items():
        for backend, row in measured["backends"].items():
            lines.append(f"| {model} | {measured['parameters']:,} | {backend} | {row['seconds']:.3f} | "
                         f"{row['speedup_vs_torch']:.2f}x | {100 * row['argmax_agreement_with_torch']:.3f} % |")
    lines += ["", "## End to end, x1/4 student, no mirroring", "",
              "| volume | run | read | preprocessing | prediction | resampling back | write | total | peak RSS |",
              "|---|---|---|---|---|---|---|---|---|"]
    for volume, runs in result["end_to_end"].items():
        for name, run in runs.items():
            s = run["stages_seconds"]
            lines.append(f"| {volume} | {name} | {s.get('reading', 0):.1f} s | {s.get('preprocessing', 0):.1f} s | "
                         f"{s.get('predicting', 0):.1f} s | {s.get('resampling', 0):.1f} s | {s.get('writing', 0):.1f} s"
                         f" | {run['total_seconds']:.1f} s | {run['peak_rss_bytes'] / 2**30:.2f} GiB |")
    lines += ["", "## Ratios (this run)", ""]
    lines += [f"- {name}: {value}" for name, value in result["ratios"].items()]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    models = list(result["forward"])
    backends = list(result["forward"][models[0]]["backends"])
    width = 0.8 / len(backends)
    for i, backend in enumerate(backends):
        values = [result["forward"][m]["backends"][backend]["seconds"] for m in models]
        bars = left.bar([j + i * width for j in range(len(models))], values, width, label=backend)
        left.bar_label(bars, fmt="%.2f s", fontsize=8)
    left.set_xticks([j + width * (len(backends) - 1) / 2 for j in range(len(models))], models)
    left.set_ylabel("seconds per 128³ patch")
    left.set_title("Forward pass")
    left.legend()
    rows = [(f"{volume}\n{name}", run["stages_seconds"]) for volume, runs in result["end_to_end"].items()
            for name, run in runs.items()]
    stages = ["reading", "preprocessing", "predicting", "resampling", "writing"]
    bottom = [0.0] * len(rows)
    for stage in stages:
        values = [stages_seconds.get(stage, 0.0) for _, stages_seconds in rows]
        right.barh([label for label, _ in rows], values, left=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values)]
    right.set_xlabel("seconds")
    right.set_title("End to end, x1/4 student")
    right.legend(fontsize=8)
    right.invert_yaxis()
    figure.suptitle(f"CPU runtime, {result['settings']['threads']} threads")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed forward passes per backend (after one warm-up)")
    p.add_argument("--slices", type=int, nargs="+", default=[120, 300], help="slices of the 512x512 volumes")
    p.add_argument("--template", type=Path, default=TEMPLATE, help="package whose labels and normalisation are used")
    p.add_argument("--out-dir", type=Path, default=Path("."))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(end_to_end_worker(json.loads(args.worker))))
        return 0

    import torch

    from recokd.inference.backends import installed_backends

    scratch = tempfile.TemporaryDirectory(prefix="recokd-cpu-runtime-")
    os.environ["RECOKD_EXPORT_CACHE"] = str(Path(scratch.name) / "exports")  # the user's cache stays untouched
    backends = ["torch"] + [b for b in installed_backends() if b != "torch"]
    fastest_other = backends[1] if len(backends) > 1 else "torch"
    runs = list(dict.fromkeys([(BEFORE, "torch", "nnunet"), ("torch", "torch", "torch"),
                               (fastest_other, fastest_other, "torch")]))
    result = {"benchmark": "cpu_runtime",
              "settings": {"threads": args.threads, "repeats": args.repeats, "patch": CT_PATCH,
                           "architecture": CT_ARCHITECTURE, "target_spacing_mm": CT_SPACING,
                           "volume_spacing_mm": list(VOLUME_SPACING), "mirroring": False,
                           "weights": "seeded random init (time and memory depend on the architecture only)"},
              "machine": {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
                          "torch": torch.__version__, "backends": backends},
              "forward": {}, "end_to_end": {}, "resampling_label_agreement": {}}
    for name, width in (("teacher", Fraction(1)), ("student x1/4", Fraction(1, 4))):
        print(f"forward pass: {name} on {', '.join(backends)}", flush=True)
        result["forward"][name] = forward_times(ct_plan_package(args.template, width), backends, args.threads,
                                                args.repeats)
    with scratch as folder:
        for slices in args.slices:
            volume = Path(folder) / f"ct_{slices}.nii.gz"
            write_volume(volume, slices)
            key = f"512x512x{slices}"
            result["end_to_end"][key] = {}
            outputs = {}
            for name, backend, resampling in runs:
                print(f"end to end: {key}, {name}", flush=True)
                outputs[name] = Path(folder) / f"labels_{slices}_{len(outputs)}.nii.gz"
                spec = {"run": name, "template": str(args.template), "volume": str(volume), "threads": args.threads,
                        "backend": backend, "resampling": resampling, "output": str(outputs[name])}
                result["end_to_end"][key][name] = _in_fresh_process(spec)
            result["resampling_label_agreement"][key] = label_agreement(outputs[BEFORE], outputs["torch"])
    student = result["forward"]["student x1/4"]["backends"]
    ratios = {f"student forward, torch / {b}": student[b]["speedup_vs_torch"] for b in backends[1:]}
    for key, measured in result["end_to_end"].items():
        before, fastest = measured[BEFORE]["total_seconds"], measured[fastest_other]["total_seconds"]
        ratios[f"end to end {key}, {BEFORE} / {fastest_other}"] = round(before / fastest, 3)
        ratios[f"resampling back {key}, nnU-Net's / PyTorch's (both torch backend)"] = round(
            measured[BEFORE]["stages_seconds"]["resampling"] / measured["torch"]["stages_seconds"]["resampling"], 3)
        ratios[f"labels equal between the two resamplings {key}, %"] = round(
            100 * result["resampling_label_agreement"][key], 4)
        ratios[f"peak RSS {key} ({fastest_other}), GiB"] = round(measured[fastest_other]["peak_rss_bytes"] / 2**30, 3)
    result["ratios"] = ratios
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "cpu_runtime.json").write_text(json.dumps(result, indent=2))
    (args.out_dir / "cpu_runtime.md").write_text(markdown(result))
    plot(result, args.out_dir / "cpu_runtime.png")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
