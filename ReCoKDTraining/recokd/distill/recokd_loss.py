"""The ReCo-KD distillation term over all distilled encoder stages (arXiv 2601.08301).

``sum_k w_k (fg_weight L_fg + bg_weight L_bg + att_weight L_att + ctx_weight L_ctx)`` over
encoder stages ``k = 0 .. K-2``. The module owns everything that trains besides the student
(channel adapters, global-context blocks); none of it is part of the exported student.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recokd.distill.masks import labels_at
from recokd.distill.ms_ca import MSCALoss
from recokd.distill.ms_sard import MSSARDLoss
from recokd.distill.options import KDOptions
from recokd.distill.precision import full_precision
from recokd.distill.schedule import stage_weights
from recokd.errors import RecokdError

TERMS = ("fg", "bg", "att", "ctx")
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class ChannelAdapter(nn.Module):
    """A 1x1x1 convolution from the student's to the teacher's channel count.

    Its parameters live in a linear layer (the same initialisation as a 1x1x1 conv, and no
    fixed number of spatial dimensions); the forward applies them as a convolution matching
    the input's dimensionality, so 2D and 3D features both work and the output is contiguous.

    Inputs:
        features: ``(B, C_in, *spatial)`` with 1 to 3 spatial dimensions.
        Returns ``(B, C_out, *spatial)``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        spatial_dims = features.ndim - 2
        kernel = self.linear.weight.view(*self.linear.weight.shape, *([1] * spatial_dims))
        return _CONV[spatial_dims](features, kernel, self.linear.bias)


class ReCoKDLoss(nn.Module):
    """ReCo-KD (arXiv 2601.08301): MS-SARD + MS-CA over the encoder stages but the bottleneck.

    Per stage ``k``: the student features go through that stage's :class:`ChannelAdapter`;
    the labels of the stage's resolution come from nnU-Net's deep-supervision targets
    (:func:`~recokd.distill.masks.labels_at`); :class:`MSSARDLoss` gives L_fg, L_bg and L_att,
    :class:`MSCALoss` gives L_ctx. Each term is summed over stages with the weights
    :func:`~recokd.distill.schedule.stage_weights` and multiplied by its ``*_weight`` option.
    The epoch's lambda is *not* applied here (the trainer does it). Teacher features are
    detached; all math runs in float32, also under autocast.

    Args:
        student_channels: student channels per distilled stage (``EncoderFeatureHooks.channels``).
        teacher_channels: teacher channels per distilled stage.
        options: :class:`KDOptions` (temperature, MS-CA form, grid, alpha, term weights).
        ignore_label: nnU-Net's ignore label (``LabelManager.ignore_label``) or None; those
            voxels are in neither mask. Negative labels are always excluded.
        num_classes: classes including background (``LabelManager.num_segmentation_heads``),
            or None; given, a step needs no device-to-host sync for the masks.

    Inputs:
        student_features: list of ``(B, Cs_k, *spatial_k)``.
        teacher_features: list of ``(B, Ct_k, *spatial_k)``.
        targets: nnU-Net's target list, highest resolution first, each ``(B, 1, *spatial)``.

    Returns:
        ``{"fg", "bg", "att", "ctx", "total"}``: float32 scalars, ``total`` the sum of the others.
    """

    def __init__(
        self,
        student_channels: Sequence[int],
        teacher_channels: Sequence[int],
        options: KDOptions,
        ignore_label: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if len(student_channels) != len(teacher_channels) or not student_channels:
            raise RecokdError(
                f"Student and teacher must distil the same, non-zero number of encoder stages, got "
                f"{len(student_channels)} and {len(teacher_channels)}; derive the student's plans from the teacher's."
            )
        self.term_weights = {name: getattr(options, f"{name}_weight") for name in TERMS}
        self.adapters = nn.ModuleList(ChannelAdapter(s, t) for s, t in zip(student_channels, teacher_channels))
        self.ms_sard = MSSARDLoss(options.attention_temperature, ignore_label, num_classes)
        self.ms_ca = nn.ModuleList(MSCALoss(t, options.ms_ca, options.affinity_grid) for t in teacher_channels)
        self.register_buffer("stage_weights", stage_weights(len(teacher_channels), options.alpha), persistent=False)

    def forward(
        self,
        student_features: Sequence[torch.Tensor],
        teacher_features: Sequence[torch.Tensor],
        targets: Sequence[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        if not len(student_features) == len(teacher_features) == len(self.adapters):
            raise ValueError(
                f"Expected {len(self.adapters)} student and teacher feature maps, "
                f"got {len(student_features)} and {len(teacher_features)}"
            )
        device = student_features[0].device
        totals = dict.fromkeys(TERMS, torch.zeros((), device=device))
        with full_precision(device):
            for k, (student, teacher) in enumerate(zip(student_features, teacher_features)):
                if student.shape[2:] != teacher.shape[2:]:
                    raise RecokdError(
                        f"Stage {k}: student features {tuple(student.shape)} and teacher features "
                        f"{tuple(teacher.shape)} differ in size; student and teacher need the same patch and strides."
                    )
                adapted = self.adapters[k](student.float())
                terms = self.ms_sard(adapted, teacher, labels_at(targets, teacher.shape[2:]))
                terms["ctx"] = self.ms_ca[k](adapted, teacher)
                for name in TERMS:
                    totals[name] = totals[name] + self.stage_weights[k] * self.term_weights[name] * terms[name]
        totals["total"] = sum(totals[name] for name in TERMS)
        return totals
