"""Shared constants and data for the bridge tests (fixtures are in ``conftest.py``).

Importing this module makes ``ReCoKDSegmentLib`` importable (it lives in ``ReCoKDSegment/``).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "ReCoKDSegment") not in sys.path:
    sys.path.insert(0, str(REPO / "ReCoKDSegment"))

from ReCoKDSegmentLib.runner import ProcessRunner, ProgressUpdate, RunnerState  # noqa: E402

STANDIN = Path(__file__).with_name("recokd_protocol_standin.py")
SLICER_CORE_MISSING = "needs the slicer-core wheel (real MRML classes; Linux x86_64 only)"


def rotation(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


#: An oblique, anisotropic grid: IJK-to-RAS with rotations about two axes, spacing 0.7/1.3/2.5.
OBLIQUE_IJK_TO_RAS = np.eye(4)
OBLIQUE_IJK_TO_RAS[:3, :3] = rotation(2, 0.35) @ rotation(0, -0.2) @ np.diag([0.7, 1.3, 2.5])
OBLIQUE_IJK_TO_RAS[:3, 3] = [12.25, -40.5, 7.125]


def phantom_voxels(shape=(6, 9, 11)) -> np.ndarray:
    """A small int16 CT-like volume (z, y, x) with a bright block and a gradient."""
    z, y, x = np.indices(shape)
    voxels = (-1000 + 10 * x + 3 * y + z).astype(np.int16)
    voxels[2:5, 3:7, 4:9] = 300
    return voxels


def phantom_labels(shape=(6, 9, 11)) -> np.ndarray:
    """Labels for :func:`phantom_voxels`: 1 = the bright block, 2 = a small corner, 3 = one voxel."""
    labels = np.zeros(shape, dtype=np.uint8)
    labels[2:5, 3:7, 4:9] = 1
    labels[0:2, 0:2, 0:3] = 2
    labels[5, 8, 10] = 3
    return labels


class Recorder:
    """Collects everything a runner reports through its callbacks."""

    def __init__(self) -> None:
        self.states: list[RunnerState] = []
        self.progress: list[ProgressUpdate] = []
        self.logs: list[str] = []

    def runner(self, **options) -> ProcessRunner:
        return ProcessRunner(on_progress=self.progress.append, on_log=self.logs.append,
                             on_state=self.states.append, **options)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    return True


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
