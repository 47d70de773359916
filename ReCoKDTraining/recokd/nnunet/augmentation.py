"""How many processes nnU-Net's data augmentation uses, for the length of one block.

nnU-Net reads the count from ``nnUNet_n_proc_DA`` when it builds its data loaders. Setting it
only for the block keeps one training's choice from leaking into the next one in the same
process (a benchmark trains a teacher, then shares the cores out among students).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

VARIABLE = "nnUNet_n_proc_DA"


def default_worker_count(device: torch.device, cores: int | None = None) -> int:
    """Workers for one training on ``device``: nnU-Net's 12 on a GPU (fewer with fewer cores).

    On small CPU machines the network step dominates and extra worker processes only compete
    for the same cores, so augmentation runs in the main process there.
    """
    cores = cores or os.cpu_count() or 1
    return min(12, cores) if device.type == "cuda" else (0 if cores <= 4 else min(4, cores // 2))


def workers_per_concurrent_job(jobs: int, cores: int | None = None) -> int:
    """nnU-Net augmentation workers for each of ``jobs`` concurrent trainings: the cores shared out.

    One core per job is left for the job's own main process (network step, loss, logging).
    """
    cores = cores or os.cpu_count() or 1
    return max(1, cores // jobs - 1)


@contextmanager
def augmentation_workers(count: int, override: bool = False) -> Iterator[None]:
    """Set ``nnUNet_n_proc_DA`` to ``count`` within the block, unless the user set it (or ``override``)."""
    saved = os.environ.get(VARIABLE)
    if saved is None or override:
        os.environ[VARIABLE] = str(count)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(VARIABLE, None)
        else:
            os.environ[VARIABLE] = saved
