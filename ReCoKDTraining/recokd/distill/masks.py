"""Class-aware, scale-normalised region masks of MS-SARD (ReCo-KD, arXiv 2601.08301).

From the ground-truth labels at a stage's resolution, per sample: each foreground voxel of
class ``c`` weighs ``1 / |voxels of class c|`` and each background voxel ``1 / |background|``.
Every class present in the patch therefore has total weight 1 whatever its size, so a
10-voxel gland counts as much as a 10,000-voxel liver; absent classes weigh nothing.

Excluded voxels (weight 0 in both masks): negative labels and, when given, nnU-Net's
``ignore_label`` (``LabelManager.ignore_label``, the largest label value when the dataset
declares an ``ignore`` label). They do not count towards any class size either.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from recokd.errors import RecokdError


def labels_at(targets: Sequence[torch.Tensor], spatial_shape: Sequence[int]) -> torch.Tensor:
    """The label map of ``spatial_shape`` from nnU-Net's deep-supervision targets.

    Args:
        targets: label maps, highest resolution first, each ``(B, 1, *spatial)`` (float or
            integer dtype), as in nnU-Net's ``batch["target"]``.
        spatial_shape: the feature's spatial size.

    Returns:
        ``(B, 1, *spatial_shape)``: the target of that size, or else ``targets[0]`` resampled
        nearest-neighbour (labels are categories; interpolating them would invent classes).
    """
    for target in targets:
        if target.shape[1] != 1:
            raise RecokdError(
                f"MS-SARD needs label maps of shape (B, 1, ...), got a target of shape {tuple(target.shape)}; "
                "region-based nnU-Net training is not supported by ReCo-KD."
            )
        if tuple(target.shape[2:]) == tuple(spatial_shape):
            return target
    return F.interpolate(targets[0].float(), size=tuple(spatial_shape), mode="nearest")


def class_balanced_masks(
    labels: torch.Tensor, ignore_label: int | None = None, num_classes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground and background masks with per-class weights summing to 1 per sample.

    Args:
        labels: ``(B, 1, *spatial)`` or ``(B, *spatial)`` integer class labels (any dtype;
            float values are rounded), 0 = background.
        ignore_label: label value excluded from both masks (nnU-Net's ignore label), or None.
        num_classes: the number of classes, background included (nnU-Net's
            ``LabelManager.num_segmentation_heads``). Given, the masks cost no device-to-host
            sync, which would stall a GPU step; labels at or above it share one extra class.
            None reads the largest label (one sync).

    Returns:
        ``(foreground, background)``, each float32 ``(B, X)`` with ``X`` the voxel count.
        Per sample, ``foreground.sum()`` is the number of present foreground classes and
        ``background.sum()`` is 1 (or 0 without background). Never NaN.
    """
    flat = labels.reshape(labels.shape[0], -1)
    flat = (flat.round() if flat.is_floating_point() else flat).long()
    valid = flat >= 0
    if ignore_label is not None:
        valid &= flat != ignore_label
    classes = torch.where(valid, flat, torch.zeros_like(flat))
    if num_classes is None:
        num_classes = int(classes.max()) + 1
    classes = classes.clamp_max(num_classes)
    # Voxel count of every (sample, class) pair; excluded voxels add nothing.
    counts = torch.zeros(classes.shape[0], num_classes + 1, dtype=torch.long, device=classes.device)
    sizes = counts.scatter_add_(1, classes, valid.long()).gather(1, classes)
    # A valid voxel's own class has size >= 1, so the clamp only guards excluded voxels.
    weights = valid.float() / sizes.clamp_min(1).float()
    is_foreground = classes > 0
    return weights * is_foreground, weights * ~is_foreground
