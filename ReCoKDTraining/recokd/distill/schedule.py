"""How much each stage and each epoch count in the distillation term (ReCo-KD, arXiv 2601.08301).

``L = L_seg + lambda(e) * sum_k w_k (L_fg + L_bg + L_att + L_ctx)``: this module gives ``w_k``
and ``lambda(e)``.
"""

from __future__ import annotations

import torch

from recokd.distill.options import KDOptions


def stage_weights(num_stages: int, alpha: float) -> torch.Tensor:
    """Stage weights ``w_k ∝ r^k`` with ``r = 2^(-3 * alpha)``, normalised to sum 1.

    ``2^(-3 k)`` is the voxel-count ratio of stage ``k`` to stage 0 for isotropic stride-2
    stages, so with ``alpha = 0.5`` a stage weighs by the square root of its relative size:
    high-resolution stages dominate without silencing the coarse ones.

    Returns:
        float32 tensor of shape ``(num_stages,)``, decreasing in ``k`` for ``alpha > 0``.
    """
    if num_stages < 1:
        raise ValueError(f"num_stages must be >= 1, got {num_stages}")
    ratio = 2.0 ** (-3.0 * alpha)
    weights = ratio ** torch.arange(num_stages, dtype=torch.float64)
    return (weights / weights.sum()).float()


def kd_weight_at(epoch: int, num_epochs: int, options: KDOptions) -> float:
    """lambda at ``epoch`` (0-based): a linear ramp from 0 to ``options.kd_weight`` (``logit_weight`` in mode logit).

    The ramp lasts ``warmup_fraction * num_epochs`` epochs (so it need not end on an
    integer epoch) and stays flat afterwards; the student first learns the task from the
    labels before the teacher's features pull on it. With ``warmup_fraction = 0`` lambda is
    ``kd_weight`` from epoch 0. Mode ``"none"`` always gives 0.
    """
    if options.mode == "none":
        return 0.0
    weight = options.logit_weight if options.mode == "logit" else options.kd_weight
    warmup_epochs = options.warmup_fraction * max(num_epochs, 1)
    if warmup_epochs == 0:
        return weight
    return weight * min(1.0, max(epoch, 0) / warmup_epochs)
