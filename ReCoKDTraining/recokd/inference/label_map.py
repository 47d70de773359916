"""Network logits back to a label map on the input grid, holding one class at full resolution at a time.

nnU-Net's ``convert_predicted_logits_to_segmentation_with_correct_shape`` resamples all classes
at once: a float64 copy of every class's logits plus a float16 array of every class at the
input's resolution, then an argmax. For a 512x512x300 CT and a handful of classes that alone
is several GB. Its resampling treats every class independently, so resampling one class at a
time and keeping a running maximum gives the same argmax (same float16 values, same first-wins
tie rule) while holding one class, the running maximum and the labels. The steps and their
order are otherwise nnU-Net's: resample, argmax, undo the crop to non-zero, undo the transpose.
Region-based models (sigmoid outputs, overlapping regions) go through nnU-Net's function as is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from recokd.inference.progress import CancelToken, raise_if_cancelled

log = logging.getLogger(__name__)


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
) -> np.ndarray:
    """Labels ``(z, y, x)`` on the original grid from logits ``(classes, *preprocessed shape)``.

    ``properties`` is the dict nnU-Net's preprocessor filled (spacing, crop box, shapes).
    ``on_class(done, total)`` is called after each class; ``cancel`` is checked before each.
    The dtype is the smallest unsigned type holding the model's largest label.
    """
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
    del best

    labels = np.zeros(properties["shape_before_cropping"], dtype=dtype)
    labels = insert_crop_into_image(labels, cropped, properties["bbox_used_for_cropping"])
    return np.ascontiguousarray(labels.transpose(plans_manager.transpose_backward))
