"""MS-CA: context alignment at one encoder stage (ReCo-KD, arXiv 2601.08301).

MS-SARD compares features voxel by voxel; MS-CA compares how each voxel relates to the
whole patch. Two forms:

- ``"gc"`` (the authors' form): a global-context block per side (GCNet style) adds a
  patch-wide context vector to every voxel, ``L_ctx = MSE(G_s(F_s'), G_t(F_t))``.
- ``"affinity"``: features average-pooled to a grid of at most ``grid^3`` voxels,
  L2-normalised over channels, ``N x N`` cosine-affinity matrices, ``L_ctx = MSE``. The
  pooling bounds memory: an affinity matrix at full resolution (``(128^3)^2`` entries) could
  never be allocated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recokd.distill.options import MS_CA_FORMS
from recokd.distill.precision import full_precision

_ADAPTIVE_AVG_POOL = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


class GlobalContextBlock(nn.Module):
    """``G(F) = F + W_2 ReLU(LN(W_1 ctx))`` with ``ctx = sum_x softmax_x(W_m F)(x) F(:, x)`` (GCNet).

    ``W_m`` (C -> 1), ``W_1`` (C -> C/2) and ``W_2`` (C/2 -> C) are 1x1x1 convolutions; they act
    on a channel vector, so they are written as linear layers, which also makes the block
    work for any number of spatial dimensions. ``W_2`` starts at zero, so a new block is the
    identity and MS-CA starts as a plain feature MSE.

    Args:
        channels: C, the feature channels.

    Inputs:
        features: ``(B, C, *spatial)``. Returns the same shape.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(channels // 2, 1)
        self.attention = nn.Linear(channels, 1)
        self.transform = nn.Sequential(
            nn.Linear(channels, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, channels)
        )
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        flat = features.flatten(2)
        pooling = torch.softmax(self.attention(flat.transpose(1, 2)).squeeze(2), dim=1)
        context = torch.einsum("bcx,bx->bc", flat, pooling)
        shift = self.transform(context)
        return features + shift.view(*shift.shape, *([1] * (features.ndim - 2)))


def pooled_affinity(features: torch.Tensor, grid: int) -> torch.Tensor:
    """Cosine affinity between the voxels of ``features`` average-pooled to at most ``grid`` per axis.

    Args:
        features: ``(B, C, *spatial)`` with 1 to 3 spatial dimensions.
        grid: pooled side; axes shorter than ``grid`` keep their size.

    Returns:
        ``(B, N, N)`` with ``N <= grid^ndim``; entry ``(i, j)`` is the cosine of the channel
        vectors of pooled voxels ``i`` and ``j`` (0 for an all-zero vector).
    """
    size = tuple(min(side, grid) for side in features.shape[2:])
    pooled = _ADAPTIVE_AVG_POOL[len(size)](features, size).flatten(2)
    unit = F.normalize(pooled, dim=1)
    return unit.transpose(1, 2) @ unit


class MSCALoss(nn.Module):
    """L_ctx of one stage (ReCo-KD, arXiv 2601.08301), in the global-context or affinity form.

    Args:
        channels: C, the teacher's channel count (the student side is already adapted).
        form: ``"gc"`` (separate trainable student and teacher :class:`GlobalContextBlock`) or
            ``"affinity"`` (:func:`pooled_affinity`, no parameters).
        grid: pooled grid side of the affinity form.

    Inputs:
        student: ``(B, C, *spatial)`` adapted student features.
        teacher: ``(B, C, *spatial)`` teacher features (detached here; the teacher-side GC
            block still trains).

    Returns:
        float32 scalar: the mean squared error of the context-enhanced features (``"gc"``) or
        of the ``N x N`` affinity matrices (``"affinity"``).
    """

    def __init__(self, channels: int, form: str = "gc", grid: int = 8) -> None:
        super().__init__()
        if form not in MS_CA_FORMS:
            raise ValueError(f"form must be one of {MS_CA_FORMS}, got {form!r}")
        self.form = form
        self.grid = grid
        if form == "gc":
            self.student_block = GlobalContextBlock(channels)
            self.teacher_block = GlobalContextBlock(channels)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        with full_precision(student.device):
            student = student.float()
            teacher = teacher.detach().float()
            if self.form == "gc":
                return F.mse_loss(self.student_block(student), self.teacher_block(teacher))
            return F.mse_loss(pooled_affinity(student, self.grid), pooled_affinity(teacher, self.grid))
