"""MS-SARD: scale-aware region distillation at one encoder stage (ReCo-KD, arXiv 2601.08301).

The student's adapted features are pulled towards the teacher's where the teacher looks
(its spatial and channel attention), separately inside the labelled structures and in the
background, with the class-aware masks of :mod:`recokd.distill.masks` so that small
structures count as much as large ones. A third term aligns the attentions themselves.
"""

from __future__ import annotations

import torch
from torch import nn

from recokd.distill.masks import class_balanced_masks
from recokd.distill.precision import full_precision


def attention_maps(features: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial and channel attention of a feature map.

    Args:
        features: ``(B, C, *spatial)``.
        temperature: T; smaller T concentrates the attention on fewer voxels/channels.

    Returns:
        ``(spatial, channel)``: ``spatial = X * softmax_x(mean_c |F| / T)`` of shape ``(B, X)``
        (``X`` voxels, mean 1 per sample) and ``channel = C * softmax_c(mean_x |F| / T)`` of
        shape ``(B, C)`` (mean 1 per sample). Scaling by ``X`` and ``C`` keeps a uniform
        attention at weight 1, independent of the stage's size.
    """
    magnitude = features.abs().flatten(2)
    num_voxels, num_channels = magnitude.shape[2], magnitude.shape[1]
    spatial = num_voxels * torch.softmax(magnitude.mean(1) / temperature, dim=1)
    channel = num_channels * torch.softmax(magnitude.mean(2) / temperature, dim=1)
    return spatial, channel


class MSSARDLoss(nn.Module):
    """MS-SARD terms L_fg, L_bg and L_att of one stage (ReCo-KD, arXiv 2601.08301).

    With ``M`` a class-aware mask, ``S_t``/``A_t`` the teacher's spatial/channel attention
    (:func:`attention_maps`), ``F_s'`` the adapted student and ``F_t`` the teacher features:

    ``L_M = sum_x M(x) sum_c (sqrt(S_t A_t) F_s' - sqrt(S_t A_t) F_t)^2 / (C * sum_x M)``
    ``    = sum_x M(x) S_t(x) (1/C) sum_c A_t(c) (F_s' - F_t)^2 / sum_x M``

    (the second form is what is computed: no square roots, same value), per sample, then
    averaged over the batch; a sample with ``sum_x M = 0`` (e.g. no foreground) contributes 0.
    L_fg uses the foreground mask, L_bg the background mask, and
    ``L_att = mean|A_s - A_t| + mean|S_s - S_t|`` with the student's attentions taken from
    ``F_s'``. The teacher side is detached; everything runs in float32.

    Args:
        temperature: attention temperature T (the method uses 0.5).
        ignore_label: label value excluded from both masks (nnU-Net's ignore label), or None.
            Negative labels are always excluded.
        num_classes: classes including background, if known: the masks then need no
            device-to-host sync (see :func:`~recokd.distill.masks.class_balanced_masks`).

    Inputs:
        student: ``(B, C, *spatial)`` adapted student features (teacher's channel count).
        teacher: ``(B, C, *spatial)`` teacher features.
        labels: ``(B, 1, *spatial)`` class labels at this resolution.

    Returns:
        ``{"fg", "bg", "att"}``: float32 scalars.
    """

    def __init__(self, temperature: float = 0.5, ignore_label: int | None = None,
                 num_classes: int | None = None) -> None:
        super().__init__()
        self.temperature = temperature
        self.ignore_label = ignore_label
        self.num_classes = num_classes

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        with full_precision(student.device):
            student = student.float()
            teacher = teacher.detach().float()
            spatial_t, channel_t = attention_maps(teacher, self.temperature)
            spatial_s, channel_s = attention_maps(student, self.temperature)
            squared = (student - teacher).flatten(2).pow(2)
            voxel_error = torch.einsum("bcx,bc->bx", squared, channel_t) / squared.shape[1] * spatial_t
            foreground, background = class_balanced_masks(labels, self.ignore_label, self.num_classes)
            attention = (channel_s - channel_t).abs().mean() + (spatial_s - spatial_t).abs().mean()
            return {
                "fg": _masked_mean(voxel_error, foreground),
                "bg": _masked_mean(voxel_error, background),
                "att": attention,
            }


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum_x M values / sum_x M`` per sample (0 where the mask is empty), mean over the batch.

    ``values`` and ``mask`` are ``(B, X)``. A non-empty class-aware mask sums to at least 1,
    so the clamp only avoids 0/0.
    """
    return ((values * mask).sum(1) / mask.sum(1).clamp_min(1e-6)).mean()
