"""CPU latency and peak memory of a teacher-width and a student-width network on one CT-sized volume.

Both models segment the same synthetic CT-like volume (default 512 x 512 x 120 voxels) with
:class:`recokd.inference.predictor.StudentPredictor`, each in its own fresh Python process,
so that each peak resident set size (the OS high-water mark, ``ru_maxrss``) belongs to one
model alone. Reported per model: parameters, load time, prediction latency (preprocessing,
sliding window, resampling back), RSS after loading and the peak; then student/teacher ratios.

Models come from two package files (``--teacher``, ``--student``) or, without packages, from
one nnU-Net plans file: random-initialised networks at width 1 (the plans as they are) and
at width 1/4 (:func:`recokd.nnunet.student_plans.derive_student_plans`). Latency and memory
depend on the architecture only, not on trained weights, but the output says which it was.

    python ReCoKDTraining/benchmarks/inference_memory.py --plans plans.json --dataset-json dataset.json \\
        --size 512 512 120 --out inference_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path


def ct_like_volume(size_xyz: tuple[int, int, int], seed: int = 0):
    """An int16 CT-like volume: an elliptic body (soft tissue, a brighter organ, a spine) in air, with noise.

    Built slice by slice so that generating it does not raise the process's memory peak
    above the volume itself. Returns ``(z, y, x)`` voxels.
    """
    import numpy as np

    nx, ny, nz = size_xyz
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[-1 : 1 : ny * 1j, -1 : 1 : nx * 1j].astype(np.float32)
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1
    spine = (x / 0.08) ** 2 + ((y - 0.4) / 0.08) ** 2 < 1
    volume = np.empty((nz, ny, nx), dtype=np.int16)
    for k in range(nz):
        t = k / max(nz - 1, 1)
        organ = ((x + 0.35) / (0.3 * (1 - abs(t - 0.5)))) ** 2 + (y / 0.3) ** 2 < 1
        hu = np.where(body, 40.0, -1000.0) + np.where(organ & body, 25.0, 0.0) + np.where(spine, 660.0, 0.0)
        volume[k] = np.clip(hu + rng.normal(0.0, 15.0, hu.shape), -1024, 3071).astype(np.int16)
    return volume


def _package(spec: dict):
    """The ModelPackage a worker measures: a package file, or random weights for plans at a width."""
    if spec.get("package"):
        from recokd.package.archive import load_package

        return load_package(Path(spec["package"]))

    import torch

    from recokd.nnunet.network import build_network
    from recokd.nnunet.student_plans import derive_student_plans
    from recokd.package.model import ModelPackage
    from recokd.package.terminology import default_label_infos

    plans = json.loads(Path(spec["plans"]).read_text())
    dataset_json = json.loads(Path(spec["dataset_json"]).read_text())
    configuration = spec["configuration"]
    width = Fraction(spec["width"])
    if width != 1:
        plans = derive_student_plans(plans, configuration, width)
    torch.manual_seed(0)
    network = build_network(plans, dataset_json, configuration)
    return ModelPackage(plans, dataset_json, configuration, default_label_infos(dataset_json),
                        network.state_dict(), {"name": f"random-init width {width}"}, mirror_axes=(0, 1, 2))


def run_worker(spec: dict) -> dict:
    """Measure one model in this (fresh) process; returns the numbers as a dict."""
    import torch

    from recokd.evaluate.complexity import count_parameters
    from recokd.inference.memory import peak_rss_bytes
    from recokd.inference.predictor import StudentPredictor

    volume = ct_like_volume(tuple(spec["size"]), spec["seed"])
    started = time.perf_counter()
    package = _package(spec)
    predictor = StudentPredictor(package, device="cpu", mirroring=spec["mirroring"], tile_step=spec["step"],
                                 threads=spec["threads"])
    load_seconds = time.perf_counter() - started
    rss_after_load = peak_rss_bytes()
    started = time.perf_counter()
    labels = predictor.predict_array(volume, spec["spacing"])
    seconds = time.perf_counter() - started
    return {
        "model": package.name,
        "parameters": count_parameters(predictor.network),
        "features_per_stage": package.plans["configurations"][package.configuration]["architecture"]["arch_kwargs"]
        .get("features_per_stage"),
        "load_seconds": round(load_seconds, 3),
        "latency_seconds": round(seconds, 3),
        "peak_rss_after_load_bytes": rss_after_load,
        "peak_rss_bytes": peak_rss_bytes(),
        "label_dtype": str(labels.dtype),
        "torch_threads": spec["threads"] or torch.get_num_threads(),
    }


def _measure(spec: dict) -> dict:
    """Run :func:`run_worker` in a fresh interpreter (its own memory peak); its last stdout line is JSON."""
    result = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"worker for {spec.get('package') or 'width ' + spec['width']} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", type=Path, help="teacher model package (*.recokd.zip)")
    p.add_argument("--student", type=Path, help="student model package (*.recokd.zip)")
    p.add_argument("--plans", type=Path, help="nnU-Net plans.json: random-init networks at width 1 and 1/4")
    p.add_argument("--dataset-json", type=Path, help="dataset.json belonging to --plans")
    p.add_argument("--configuration", default="3d_fullres")
    p.add_argument("--size", type=int, nargs=3, default=(512, 512, 120), metavar=("X", "Y", "Z"))
    p.add_argument("--spacing", type=float, nargs=3, default=(0.8, 0.8, 2.5), metavar=("X", "Y", "Z"))
    p.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads (default: PyTorch's choice)")
    p.add_argument("--mirroring", action="store_true", help="test-time mirroring (default off: the --fast setting)")
    p.add_argument("--step", type=float, default=0.5, help="sliding-window tile step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("inference_memory.json"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is None:
        packages = args.teacher is not None and args.student is not None
        if not packages and not (args.plans and args.dataset_json):
            p.error("give --teacher and --student packages, or --plans and --dataset-json")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0

    common = {"size": list(args.size), "spacing": list(args.spacing), "threads": args.threads,
              "mirroring": args.mirroring, "step": args.step, "seed": args.seed}
    if args.teacher and args.student:
        source = "packages"
        specs = {"teacher": {**common, "package": str(args.teacher)}, "student": {**common, "package": str(args.student)}}
    else:
        source = "random-init networks from plans (width 1 and 1/4), not trained packages"
        plan = {"plans": str(args.plans), "dataset_json": str(args.dataset_json), "configuration": args.configuration}
        specs = {"teacher": {**common, **plan, "width": "1"}, "student": {**common, **plan, "width": "1/4"}}
    print(f"Models: {source}")
    print(f"Volume: {args.size[0]}x{args.size[1]}x{args.size[2]} voxels, spacing {tuple(args.spacing)} mm, CPU, "
          f"mirroring {'on' if args.mirroring else 'off'}, tile step {args.step}")

    results = {}
    for role, spec in specs.items():
        results[role] = _measure(spec)
        r = results[role]
        print(f"  {role:8s} {r['parameters']:>12,d} params  load {r['load_seconds']:7.2f} s  "
              f"latency {r['latency_seconds']:8.2f} s  peak RSS {r['peak_rss_bytes'] / 1024**2:8.0f} MB "
              f"(after load {r['peak_rss_after_load_bytes'] / 1024**2:.0f} MB)")
    teacher, student = results["teacher"], results["student"]
    ratios = {
        "latency_student_over_teacher": round(student["latency_seconds"] / teacher["latency_seconds"], 4),
        "peak_rss_student_over_teacher": round(student["peak_rss_bytes"] / teacher["peak_rss_bytes"], 4),
        "parameters_student_over_teacher": round(student["parameters"] / teacher["parameters"], 4),
    }
    print("Ratios (student / teacher): " + ", ".join(f"{k.split('_')[0]} {v:.3f}" for k, v in ratios.items()))

    from importlib.metadata import version

    import torch

    report = {
        "benchmark": "inference_memory",
        "models_source": source,
        "settings": {**common, "configuration": args.configuration, "device": "cpu"},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "nnunetv2": version("nnunetv2")},
        "models": results,
        "ratios": ratios,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
