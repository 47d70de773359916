"""Load: many phantom volumes through one ``recokd segment`` process; memory per volume and throughput.

Generates ``--count`` synthetic CT phantoms (:mod:`recokd.data.phantom`, ``--size`` voxels per
side), segments the whole folder with one ``recokd segment`` process (``--progress json``) and
reads, for every volume, the seconds it took and the process's resident memory right after it
(``rss_bytes`` in the result event). Writes ``batch_load.json`` and ``batch_load.png`` (memory
and seconds against the volume's position in the batch) to ``--out``; ``--render JSON``
recomputes the summary and plot of a recorded run.

    python ReCoKDTraining/benchmarks/batch_load.py --model recokd_work/demo/packages/phantom_student_recokd.recokd.zip
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from recokd.data.phantom import PhantomConfig, generate_case
from recokd.evaluate.environment import package_versions

HERE = Path(__file__).resolve().parent
WARM_UP_VOLUMES = 5  # the first volumes fill PyTorch's and the allocator's caches; growth is judged after them


def write_phantoms(folder: Path, count: int, size: int, seed: int) -> list[Path]:
    """``count`` phantom CT volumes of ``size``^3 voxels as ``folder/phantom_XXX.nii.gz``."""
    config = PhantomConfig(shape=(size, size, size))
    paths = []
    for index in range(count):
        image, _ = generate_case(seed, index, config).to_sitk()
        paths.append(folder / f"phantom_{index:03d}.nii.gz")
        sitk.WriteImage(image, str(paths[-1]), useCompression=True)
    return paths


def segment_folder(model: Path, source: Path, target: Path, threads: int | None, mirroring: bool) -> tuple[list, float]:
    """One ``recokd segment`` process over ``source``; returns its per-volume outputs and the wall time."""
    command = [sys.executable, "-m", "recokd", "segment", "-m", str(model), "-i", str(source), "-o", str(target),
               "--device", "cpu", "--progress", "json"]
    command += [] if threads is None else ["--threads", str(threads)]
    command += [] if mirroring else ["--fast"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"recokd segment failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    event = json.loads(result.stdout.splitlines()[-1])
    return event["outputs"], wall


def summarise(rss_mb: list[float], seconds: list[float], wall_seconds: float) -> dict:
    """Memory trend after the warm-up volumes (least-squares slope, range, first-to-last), and throughput.

    Resident memory after a volume moves up and down with that volume's size (the phantoms'
    spacing varies, so their resampled sizes do) and with the allocator; the slope over the
    batch is what a leak would raise.
    """
    steady = rss_mb[WARM_UP_VOLUMES - 1:]
    slope = float(np.polyfit(np.arange(len(steady)), steady, 1)[0]) if len(steady) > 1 else 0.0
    return {
        "volumes": len(rss_mb),
        "rss_mb_after_each_volume": rss_mb,
        "seconds_per_volume": seconds,
        "rss_trend_mb_per_volume_after_warm_up": round(slope, 3),
        "rss_range_mb_after_warm_up": [min(steady), max(steady)],
        "rss_growth_mb_first_to_last_after_warm_up": round(steady[-1] - steady[0], 1),
        "mean_seconds_per_volume": round(sum(seconds) / len(seconds), 3),
        "volumes_per_minute_including_start_up": round(60 * len(rss_mb) / wall_seconds, 2),
        "process_wall_seconds": round(wall_seconds, 1),
    }


def plot(summary: dict, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = range(1, summary["volumes"] + 1)
    figure, (memory, seconds) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    memory.plot(index, summary["rss_mb_after_each_volume"], marker=".")
    memory.text(0.99, 0.04, f"trend after volume {WARM_UP_VOLUMES}: "
                f"{summary['rss_trend_mb_per_volume_after_warm_up']:+.2f} MB per volume",
                transform=memory.transAxes, ha="right", fontsize=9)
    memory.set_ylabel("resident memory after volume (MB)")
    memory.set_title(title, fontsize=10)
    seconds.bar(index, summary["seconds_per_volume"])
    seconds.set_ylabel("seconds")
    seconds.set_xlabel("volume in the batch")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def render(path: Path) -> None:
    """Recompute the summary and the plot of a recorded run from its per-volume measurements."""
    record = json.loads(path.read_text())
    summary = summarise(record["rss_mb_after_each_volume"], record["seconds_per_volume"],
                        record["process_wall_seconds"])
    record = {key: record[key] for key in ("benchmark", "model", "settings", "versions")} | summary
    write(record, path.parent)


def write(record: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "batch_load.json").write_text(json.dumps(record, indent=2) + "\n")
    settings = record["settings"]
    plot(record, f"{record['volumes']} phantom volumes of {settings['size'][0]}³ in one recokd segment process "
                 f"({record['model']})", out / "batch_load.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model package (.recokd.zip) or installed name")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--size", type=int, default=96, help="phantom voxels per side")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--mirroring", action="store_true", help="test-time mirroring (default off: --fast)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="only recompute the summary and plot of a recorded run (no segmentation)")
    args = parser.parse_args(argv)
    if args.render:
        render(args.render)
        return 0
    if args.model is None:
        parser.error("--model is required")
    with tempfile.TemporaryDirectory(prefix="recokd_batch_load_") as scratch:
        source = Path(scratch) / "volumes"
        source.mkdir()
        write_phantoms(source, args.count, args.size, args.seed)
        outputs, wall = segment_folder(args.model, source, Path(scratch) / "labels", args.threads, args.mirroring)
    summary = summarise([round(o["rss_bytes"] / 2**20, 1) for o in outputs], [o["seconds"] for o in outputs], wall)
    write({
        "benchmark": "batch_load",
        "model": args.model.name,
        "settings": {"count": args.count, "size": [args.size] * 3, "seed": args.seed, "threads": args.threads,
                     "mirroring": args.mirroring, "device": "cpu", "warm_up_volumes": WARM_UP_VOLUMES},
        "versions": package_versions(),
        **summary,
    }, args.out)
    print(f"{summary['volumes']} volumes: memory trend {summary['rss_trend_mb_per_volume_after_warm_up']:+.2f} MB "
          f"per volume after the first {WARM_UP_VOLUMES} (range {summary['rss_range_mb_after_warm_up']} MB); "
          f"{summary['mean_seconds_per_volume']} s per volume, "
          f"{summary['volumes_per_minute_including_start_up']} volumes/min including start-up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
