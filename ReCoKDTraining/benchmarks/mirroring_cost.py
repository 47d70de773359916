"""What test-time mirroring buys on the CPU: Dice with and without it, paired per case, and the time it costs.

The shipped Hippocampus ReCo-KD student segments the 42 test cases of the committed
Hippocampus benchmark split (``results/hippocampus_cpu.json``) twice on the CPU, with nnU-Net's
mirroring (8 flipped copies per tile) and without it (``recokd segment --fast``). Reported:
mean Dice of each, the paired per-case difference with its 95 % BCa bootstrap CI and the
Wilcoxon p-value (:mod:`recokd.evaluate.statistics`), and the mean seconds per case of each
with their ratio, all from one run. Needs the MSD Hippocampus data (``../shared/data``).

    python ReCoKDTraining/benchmarks/mirroring_cost.py --data ../shared/data/Dataset004_Hippocampus \\
        --out-dir ReCoKDTraining/benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPLIT = ROOT / "ReCoKDTraining" / "benchmarks" / "results" / "hippocampus_cpu.json"
STUDENT = ROOT / "Resources" / "Models" / "hippocampus-recokd-x1of4.recokd.zip"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="MSD-style Hippocampus folder (imagesTr/, labelsTr/)")
    p.add_argument("--model", type=Path, default=STUDENT)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="auto")
    p.add_argument("--out-dir", type=Path, default=Path("."))
    args = p.parse_args(argv)

    import torch

    from recokd.evaluate.comparison import evaluate_models
    from recokd.evaluate.statistics import paired_difference, per_case_values, verdict

    torch.set_num_threads(args.threads)
    test_ids = json.loads(SPLIT.read_text())["split"]["test"]
    cases = [(args.data / "imagesTr" / f"{case}_0000.nii.gz", args.data / "labelsTr" / f"{case}.nii.gz") for case in test_ids]
    missing = [str(image) for image, label in cases if not (image.is_file() and label.is_file())]
    if missing:
        raise SystemExit(f"{len(missing)} test case(s) missing, e.g. {missing[0]}")
    runs = {}
    for mirroring in (True, False):
        print(f"mirroring {'on' if mirroring else 'off'}: {len(cases)} cases", flush=True)
        runs[mirroring] = evaluate_models({"student": args.model}, cases, "cpu", args.threads, mirroring,
                                          backend=args.backend)["student"]
    on, off = (per_case_values([runs[m]["cases"]], "dice") for m in (True, False))
    difference = paired_difference({c: 100 * v for c, v in off.items()}, {c: 100 * v for c, v in on.items()})
    result = {
        "benchmark": "mirroring_cost",
        "model": args.model.name, "cases": len(cases), "threads": args.threads, "backend": runs[True]["backend"],
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
        "mean_dice_percent": {"mirroring": 100 * runs[True]["mean_dice"], "no_mirroring": 100 * runs[False]["mean_dice"]},
        "seconds_per_case": {"mirroring": runs[True]["cpu_latency_s"], "no_mirroring": runs[False]["cpu_latency_s"]},
        "speedup_without_mirroring": runs[True]["cpu_latency_s"] / runs[False]["cpu_latency_s"],
        "dice_no_mirroring_minus_mirroring_points": difference.to_dict(),
        "verdict": verdict(difference),
    }
    lines = [f"# Test-time mirroring on the CPU ({result['model']}, {len(cases)} Hippocampus test cases, "
             f"{args.threads} threads, {result['backend']})", "",
             "| | mean Dice (%) | s / case |", "|---|---:|---:|",
             f"| mirroring (nnU-Net's default) | {result['mean_dice_percent']['mirroring']:.2f} | "
             f"{result['seconds_per_case']['mirroring']:.3f} |",
             f"| no mirroring (`--fast`) | {result['mean_dice_percent']['no_mirroring']:.2f} | "
             f"{result['seconds_per_case']['no_mirroring']:.3f} |", "",
             f"No mirroring − mirroring: {difference.mean:+.2f} Dice points per case, 95 % CI "
             f"{difference.ci_low:+.2f} … {difference.ci_high:+.2f}, Wilcoxon p "
             f"{'n/a' if difference.p_value is None else f'{difference.p_value:.3g}'} ({result['verdict']}); "
             f"{result['speedup_without_mirroring']:.2f}× faster without mirroring."]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "mirroring_cost.json").write_text(json.dumps(result, indent=2))
    (args.out_dir / "mirroring_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
