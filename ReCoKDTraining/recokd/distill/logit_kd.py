"""Logit distillation, the classic baseline ReCo-KD is compared with (Hinton et al., 2015).

Only the network outputs are matched, voxel by voxel; no features, no adapters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recokd.distill.precision import full_precision


class LogitKDLoss(nn.Module):
    """``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))`` over classes, mean over batch and voxels.

    The ``T^2`` factor keeps the gradient magnitude independent of T, so ``kd_weight`` means
    the same at any temperature.

    Args:
        temperature: T > 0; larger T softens both distributions and transfers more of the
            teacher's ranking of the wrong classes.

    Inputs:
        student: ``(B, C, *spatial)`` student logits.
        teacher: ``(B, C, *spatial)`` teacher logits (detached here).

    Returns:
        float32 scalar, >= 0, 0 exactly when both give the same class distributions.
    """

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        with full_precision(student.device):
            log_p_student = F.log_softmax(student.float() / self.temperature, dim=1)
            log_p_teacher = F.log_softmax(teacher.detach().float() / self.temperature, dim=1)
            divergence = F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(1)
            return divergence.mean() * self.temperature**2
