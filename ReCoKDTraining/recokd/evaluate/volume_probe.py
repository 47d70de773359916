"""Latency and peak memory of one model on one volume, measured in a process of its own.

Run as ``python -m recokd.evaluate.volume_probe PACKAGE VOLUME [--threads N] [--mirroring] [--tile-step S]``;
prints one JSON line ``{"ct_cpu_latency_s": ..., "peak_rss_mb": ...}`` on stdout.
:func:`recokd.evaluate.comparison.latency_and_memory_on_volume` starts one per model, because
peak RSS is a per-process high-water mark.

The volume is segmented at the model's own target spacing (its voxels are declared to have
that spacing), so every model runs its network over the same number of voxels. One untimed
warm-up prediction on a single patch comes first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from recokd.inference.image_io import read_image
from recokd.inference.memory import peak_rss_bytes
from recokd.inference.predictor import StudentPredictor
from recokd.package.archive import load_package
from recokd.package.model import ModelPackage


def native_geometry(package: ModelPackage) -> tuple[tuple[float, float, float], tuple[int, int, int]]:
    """The model's target spacing in ITK order ``(x, y, z)`` and its patch in array order ``(z, y, x)``.

    nnU-Net's plans hold both after ``transpose_forward``; they are mapped back to the
    input's axes, so an input with this spacing is not resampled.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(package.plans)
    configuration = plans_manager.get_configuration(package.configuration)
    backward = list(plans_manager.transpose_backward)
    spacing_zyx = np.asarray(configuration.spacing, float)[backward]
    patch_zyx = np.asarray(configuration.patch_size, int)[backward]
    return tuple(float(s) for s in spacing_zyx[::-1]), tuple(int(p) for p in patch_zyx)


def probe(package_path: Path, volume_path: Path, threads: int | None = None, mirroring: bool = False,
          tile_step: float = 0.5) -> dict:
    """Segment the volume once on the CPU after a one-patch warm-up; latency and this process's peak RSS."""
    package = load_package(package_path)
    predictor = StudentPredictor(package, device="cpu", mirroring=mirroring, tile_step=tile_step, threads=threads)
    image = read_image(volume_path)
    array = sitk.GetArrayViewFromImage(image)  # a view: ``image`` must stay alive while it is used
    spacing, patch = native_geometry(package)
    predictor.predict_array(array[tuple(slice(0, p) for p in patch)], spacing)
    start = time.perf_counter()
    predictor.predict_array(array, spacing)
    latency = time.perf_counter() - start
    peak = peak_rss_bytes()
    return {"ct_cpu_latency_s": latency, "peak_rss_mb": None if peak is None else peak / 2**20}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("volume", type=Path)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--mirroring", action="store_true")
    parser.add_argument("--tile-step", type=float, default=0.5)
    args = parser.parse_args(argv)
    result = probe(args.package, args.volume, args.threads, args.mirroring, args.tile_step)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
