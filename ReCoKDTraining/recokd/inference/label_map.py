"""Network logits back to a label map on the input grid, holding one class at full resolution at a time.

nnU-Net's ``convert_predicted_logits_to_segmentation_with_correct_shape`` resamples all classes
at once: a float64 copy of every class's logits plus a float16 array of every class at the
input's resolution, then an argmax. For a 512x512x300 CT and a handful of classes that alone
is several GB. Its resampling treats every class independently, so resampling one class at a
time and keeping a running maximum gives the same argmax (first-wins tie rule) while holding
one class, the running maximum and the labels. The steps and their order are otherwise
nnU-Net's: resample, argmax, undo the crop to non-zero, undo the transpose.

Two ways to resample (``RESAMPLING_CHOICES``): ``"torch"`` (the default) runs nnU-Net's default
linear resampling as PyTorch ops (:mod:`.torch_resampling`: labels equal up to float32 ties,
several times faster); ``"nnunet"`` runs nnU-Net's own scipy arithmetic (:mod:`.resampling`,
bit for bit). A configuration whose resampling torch cannot reproduce (another function, cubic
order) takes the ``"nnunet"`` path either way. Region-based models (sigmoid outputs,
overlapping regions) go through nnU-Net's function as is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from recokd.errors import RecokdError
from recokd.inference.progress import CancelToken, raise_if_cancelled
from recokd.inference.torch_resampling import linear_resampling_arguments, resampled_argmax

log = logging.getLogger(__name__)

RESAMPLING_CHOICES = ("torch", "nnunet")


def smallest_unsigned_dtype(max_value: int) -> np.dtype:
    """The narrowest unsigned integer dtype that holds ``0..max_value``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def logits_to_labels(
    logits: torch.Tensor,
    properties: dict,
    plans_manager,
    configuration_manager,
    label_manager,
    cancel: CancelToken | None = None,
    on_class: Callable[[int, int], None] | None = None,
    resampling: str = "torch",
) -> np.ndarray:
    """Labels ``(z, y, x)`` on the original grid from logits ``(classes, *preprocessed shape)``.

    ``properties`` is the dict nnU-Net's preprocessor filled (spacing, crop box, shapes).
    ``on_class(done, total)`` is called after each class; ``cancel`` is checked before each.
    ``resampling``: one of ``RESAMPLING_CHOICES`` (module docstring). The dtype is the smallest
    unsigned type holding the model's largest label.
    """
    if resampling not in RESAMPLING_CHOICES:
        raise RecokdError(f"Unknown resampling {resampling!r}; choose one of {', '.join(RESAMPLING_CHOICES)}.")
    dtype = smallest_unsigned_dtype(max(label_manager.all_labels))
    if label_manager.has_regions:
        from nnunetv2.inference.export_prediction import (
            convert_predicted_logits_to_segmentation_with_correct_shape,
        )

        labels = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, plans_manager, configuration_manager, label_manager, properties
        )
        return np.ascontiguousarray(labels, dtype=dtype)

    from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

    target_shape = properties["shape_after_cropping_and_before_resampling"]
    original_spacing = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    current_spacing = configuration_manager.spacing
    if len(current_spacing) != len(target_shape):  # 2D configuration: slices keep their spacing
        current_spacing = [original_spacing[0], *current_spacing]
    resample = configuration_manager.resampling_fn_probabilities
    torch_arguments = linear_resampling_arguments(resample) if resampling == "torch" else None

    if torch_arguments is not None:
        cropped = resampled_argmax(logits, target_shape, current_spacing, original_spacing, **torch_arguments,
                                   cancel=cancel, on_class=on_class).numpy().astype(dtype, copy=False)
    else:
        cropped = _resampled_argmax_nnunet(logits, target_shape, current_spacing, original_spacing, resample, dtype,
                                           cancel, on_class)

    labels = np.zeros(properties["shape_before_cropping"], dtype=dtype)
    labels = insert_crop_into_image(labels, cropped, properties["bbox_used_for_cropping"])
    return np.ascontiguousarray(labels.transpose(plans_manager.transpose_backward))


def _resampled_argmax_nnunet(
    logits: torch.Tensor,
    target_shape,
    current_spacing,
    original_spacing,
    resample: Callable,
    dtype: np.dtype,
    cancel: CancelToken | None,
    on_class: Callable[[int, int], None] | None,
) -> np.ndarray:
    """Labels ``target_shape`` from ``(classes, ...)`` logits with nnU-Net's resampling, one class at a time."""
    total = logits.shape[0]
    best: np.ndarray | None = None
    cropped = np.zeros(target_shape, dtype=dtype)
    for c in range(total):
        raise_if_cancelled(cancel)
        channel = np.asarray(resample(logits[c : c + 1], target_shape, current_spacing, original_spacing))[0]
        if best is None:
            best = channel.copy()
        else:
            better = channel > best
            cropped[better] = c
            np.copyto(best, channel, where=better)
        del channel
        if on_class is not None:
            on_class(c + 1, total)
    return cropped
