"""The teacher's labels for an unlabeled scan, on the preprocessed grid, and the fingerprint that names them.

A student trains on preprocessed patches, so the teacher predicts where the student learns:
on the preprocessed volume, with nnU-Net's Gaussian-weighted sliding window (the batched
tiles of :mod:`recokd.inference.sliding_window`), and its argmax is the target. Nothing is
resampled back to the scan's grid.

The fingerprint is a sha256 over everything that decides those labels: the teacher's plans,
configuration and labels, every weight, and the sliding-window settings. A cached label map
carries it; a different teacher (another fold, checkpoint or package) or other settings give
another fingerprint, so the labels are predicted again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable

import numpy as np
import torch

from recokd.nnunet.teacher import Teacher
from recokd.package.weights import update_with_state_dict

log = logging.getLogger(__name__)

FINGERPRINT_FORMAT = 1  # bump when the labelling changes, so older cached labels are predicted again


class TeacherLabeller:
    """Predicts label maps ``(z, y, x)`` for preprocessed volumes ``(c, z, y, x)`` with a frozen teacher.

    ``mirroring``: nnU-Net's test-time mirroring over the teacher's allowed axes (better labels,
    up to 8x the time); ``tile_step``: the sliding window's step as a fraction of the patch.
    """

    def __init__(self, teacher: Teacher, device: torch.device, mirroring: bool = True, tile_step: float = 0.5) -> None:
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        from recokd.inference.sliding_window import tile_predictor

        self.teacher = teacher
        self.mirroring = bool(mirroring and teacher.mirror_axes)
        self.tile_step = tile_step
        plans_manager = PlansManager(teacher.plans)
        self._nnunet = tile_predictor(teacher.network, plans_manager, plans_manager.get_configuration(teacher.configuration),
                                      teacher.dataset_json, teacher.mirror_axes, device, self.mirroring, tile_step)

    def fingerprint(self) -> str:
        """sha256 hex of the teacher (plans, configuration, labels, weights) and the sliding-window settings."""
        teacher = self.teacher
        digest = hashlib.sha256()
        header = {"format": FINGERPRINT_FORMAT, "plans": teacher.plans, "configuration": teacher.configuration,
                  "labels": teacher.dataset_json.get("labels"), "mirror_axes": teacher.mirror_axes if self.mirroring
                  else None, "tile_step": self.tile_step}
        digest.update(json.dumps(header, sort_keys=True, default=str).encode())
        update_with_state_dict(digest, teacher.network.state_dict())
        return digest.hexdigest()

    def __call__(self, data: np.ndarray, on_tile: Callable[[int, int], None] | None = None) -> np.ndarray:
        """The argmax of the teacher's logits for ``data`` ``(c, z, y, x)``: int16 ``(z, y, x)``."""
        self._nnunet.on_tile = on_tile
        try:
            logits = self._nnunet.predict_sliding_window_return_logits(torch.from_numpy(np.asarray(data)))
        finally:
            self._nnunet.on_tile = None
        return logits.argmax(0).to(torch.int16).cpu().numpy()
