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
from typing import TypeVar

import numpy as np
import torch

from recokd.errors import RecokdError
from recokd.inference.progress import CancelToken, raise_if_cancelled
from recokd.inference.torch_resampling import linear_resampling_arguments, resampling_steps

log = logging.getLogger(__name__)

Array = TypeVar("Array", np.ndarray, torch.Tensor)

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

    total = logits.shape[0]
    if torch_arguments is not None:
        resample_class, after_argmax = resampling_steps(logits.shape[1:], target_shape, current_spacing,
                                                        original_spacing, **torch_arguments)
        index_dtype = torch.uint8 if total <= 256 else torch.int32
        labels = running_argmax(lambda c: resample_class(logits[c]), total,
                                lambda channel: torch.zeros(channel.shape, dtype=index_dtype), cancel, on_class)
        cropped = (labels if after_argmax is None else after_argmax(labels)).numpy().astype(dtype, copy=False)
    else:
        cropped = running_argmax(
            lambda c: np.array(resample(logits[c : c + 1], target_shape, current_spacing, original_spacing)[0]),
            total, lambda channel: np.zeros(channel.shape, dtype=dtype), cancel, on_class)

    labels = np.zeros(properties["shape_before_cropping"], dtype=dtype)
    labels = insert_crop_into_image(labels, cropped, properties["bbox_used_for_cropping"])
    return np.ascontiguousarray(labels.transpose(plans_manager.transpose_backward))


def running_argmax(
    resample_class: Callable[[int], Array],
    total: int,
    new_labels: Callable[[Array], Array],
    cancel: CancelToken | None = None,
    on_class: Callable[[int, int], None] | None = None,
) -> Array:
    """The argmax over ``total`` classes, computing one class at a time (numpy arrays or tensors alike).

    ``resample_class(c)`` gives class ``c``'s values (a fresh array: it becomes the running
    maximum); ``new_labels(first)`` the zero labels of that shape. Ties go to the lower class, as
    with ``argmax``. ``cancel`` is checked before each class, ``on_class(done, total)`` called after.
    """
    best = labels = None
    for c in range(total):
        raise_if_cancelled(cancel)
        channel = resample_class(c)
        if best is None:
            best, labels = channel, new_labels(channel)
        else:
            labels[channel > best] = c
            maximum = torch.maximum if isinstance(best, torch.Tensor) else np.maximum  # in place, unlike best[mask] = ...
            maximum(best, channel, out=best)
        del channel
        if on_class is not None:
            on_class(c + 1, total)
    return labels
