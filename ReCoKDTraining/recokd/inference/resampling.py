"""nnU-Net's default resampling with the same output arrays, in memory bounded by the output.

When a volume is anisotropic, nnU-Net's ``resample_data_or_seg`` resizes every slice in-plane
into a float64 copy of the whole channel, then moves along the anisotropic axis with
``map_coordinates``: three float64 coordinate grids over the whole output, a stacked copy of
them and a float64 result, about 56 bytes per output voxel on top of the output itself. For a
512x512x300 CT that is several GB, in preprocessing and again for every class of the logits.

The in-plane step already gave the output's in-plane size, so along the anisotropic axis
``map_coordinates`` only moves between whole slices: with order 0 it picks one in-plane-resized
source slice per output slice, with order 1 it blends two neighbouring ones. This module does
exactly that slice by slice, into the preallocated output, resizing each source slice it needs
once (two are held at a time) with nnU-Net's own in-plane function. The arithmetic is scipy's
(coordinates, rounding, weights, ``mode="nearest"`` border, float64), so the arrays equal
nnU-Net's bit for bit. Any other path (no anisotropic axis, ``order_z`` above 1, nothing to
resample) is nnU-Net's own function, which holds no coordinate grids there (skimage's resize
of the whole channel: float64 copies of input and output).

:class:`BoundedResamplingConfiguration` hands these functions to one predictor; nnU-Net's
training and dataset preprocessing keep their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache, partial

import numpy as np
import torch
from batchgenerators.augmentations.utils import resize_segmentation
from nnunetv2.configuration import ANISO_THRESHOLD
from nnunetv2.preprocessing.resampling import default_resampling
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
from skimage.transform import resize


def resample_data_or_seg_to_shape(
    data: torch.Tensor | np.ndarray,
    new_shape: Sequence[int],
    current_spacing: Sequence[float],
    new_spacing: Sequence[float],
    is_seg: bool = False,
    order: int = 3,
    order_z: int = 0,
    force_separate_z: bool | None = False,
    separate_z_anisotropy_threshold: float = ANISO_THRESHOLD,
) -> np.ndarray:
    """``(c, x, y, z) -> (c, *new_shape)``: nnU-Net's function of the same name and signature, bounded."""
    if isinstance(data, torch.Tensor):
        data = data.numpy()
    do_separate_z, axis = default_resampling.determine_do_sep_z_and_axis(
        force_separate_z, current_spacing, new_spacing, separate_z_anisotropy_threshold
    )
    return resample_data_or_seg(data, new_shape, is_seg, axis, order, do_separate_z, order_z=order_z)


def resample_data_or_seg(
    data: np.ndarray,
    new_shape: Sequence[int],
    is_seg: bool = False,
    axis: int | None = None,
    order: int = 3,
    do_separate_z: bool = False,
    order_z: int = 0,
    dtype_out: np.dtype | None = None,
) -> np.ndarray:
    """``(c, x, y, z) -> (c, *new_shape)``, equal to nnU-Net's ``resample_data_or_seg`` (values and dtype).

    With ``do_separate_z`` and ``order_z`` 0 or 1, slices across ``axis`` are resized in-plane
    with ``order`` (``resize_segmentation`` when ``is_seg``, else skimage's ``resize``) and
    combined along ``axis`` with ``order_z`` one output slice at a time. Peak memory: the output,
    two resized source slices and a few slice-sized temporaries.
    """
    assert data.ndim == 4, "data must be (c, x, y, z)"
    assert len(new_shape) == 3, "new_shape must be (x, y, z)"
    new_shape = tuple(int(n) for n in new_shape)
    if not do_separate_z or order_z not in (0, 1) or data.shape[1:] == new_shape:
        return default_resampling.resample_data_or_seg(
            data, new_shape, is_seg, axis, order, do_separate_z, order_z=order_z, dtype_out=dtype_out
        )
    assert axis is not None, "If do_separate_z, we need to know what axis is anisotropic"

    plane_shape = tuple(n for i, n in enumerate(new_shape) if i != axis)
    if is_seg:
        resize_plane = partial(resize_segmentation, new_shape=plane_shape, order=order)
    else:
        resize_plane = partial(resize, output_shape=plane_shape, order=order, mode="edge", anti_aliasing=False)
    output = np.zeros((data.shape[0], *new_shape), dtype=data.dtype if dtype_out is None else dtype_out)
    source_length, target_length = data.shape[1 + axis], new_shape[axis]
    for c in range(data.shape[0]):
        plane = _resized_planes(np.moveaxis(data[c], axis, 0), resize_plane)
        target = np.moveaxis(output[c], axis, 0)
        if order_z == 0 or source_length == target_length:  # equal lengths: nnU-Net keeps the slices as resized
            for k, i in enumerate(nearest_slices(source_length, target_length)):
                target[k] = plane(i)
        else:
            for k, (lo, hi, w_lo, w_hi) in enumerate(zip(*linear_slices(source_length, target_length))):
                _blend_into(target[k], plane(lo), plane(hi), w_lo, w_hi, is_seg)
    return output


def _blend_into(out: np.ndarray, below: np.ndarray, above: np.ndarray, w_lo: float, w_hi: float, is_seg: bool) -> None:
    """Write one output slice of the linear step, ``below * w_lo + above * w_hi`` in float64, into ``out``.

    Segmentations are blended per label as nnU-Net does: the label goes where its blended
    indicator rounds to 1, labels in ascending order so that a later one overwrites. Labels in
    neither slice would blend to 0 everywhere, so only those of the two slices are visited.
    """
    if not is_seg:
        out[...] = below * w_lo + above * w_hi
        return
    for label in np.union1d(below, above):
        blend = (below == label) * w_lo + (above == label) * w_hi
        out[np.round(blend) > 0.5] = label


def _resized_planes(slices: np.ndarray, resize_plane: Callable[[np.ndarray], np.ndarray]) -> Callable[[int], np.ndarray]:
    """``i -> resize_plane(slices[i])`` in float64, computed once while wanted in ascending order, two kept.

    ``slices`` is ``(n, a, b)``. The output walks the source slices in ascending order and needs
    at most two neighbours at a time, so a two-entry cache resizes each needed slice once.
    """

    @lru_cache(maxsize=2)
    def plane(i: int) -> np.ndarray:
        return resize_plane(slices[i].astype(float, copy=False))

    return plane


def _source_coordinates(source_length: int, target_length: int) -> np.ndarray:
    """Where each output slice samples the source along the axis, as nnU-Net computes it (pixel centres)."""
    return float(source_length) / target_length * (np.arange(target_length) + 0.5) - 0.5


def nearest_slices(source_length: int, target_length: int) -> np.ndarray:
    """The source slice of each output slice for ``map_coordinates(order=0, mode="nearest")``.

    scipy rounds half up (``floor(x + 0.5)``) and clamps the index to the array.
    """
    nearest = np.floor(_source_coordinates(source_length, target_length) + 0.5)
    return np.clip(nearest, 0, source_length - 1).astype(np.intp)


def linear_slices(source_length: int, target_length: int) -> tuple[np.ndarray, ...]:
    """``(lo, hi, w_lo, w_hi)`` per output slice for ``map_coordinates(order=1, mode="nearest")``.

    As scipy does it: the weights come from the unclamped coordinate (``w_lo = 1 - frac``,
    ``w_hi = 1 - w_lo``), only the two indices are clamped, so at the borders a slice can be
    blended with itself (which is not always bit-identical to the slice).
    """
    coordinates = _source_coordinates(source_length, target_length)
    below = np.floor(coordinates)
    w_lo = 1.0 - (coordinates - below)
    w_hi = 1.0 - w_lo
    lo = np.clip(below, 0, source_length - 1).astype(np.intp)
    hi = np.clip(below + 1, 0, source_length - 1).astype(np.intp)
    return lo, hi, w_lo, w_hi


def _bounded(resampling_fn: Callable) -> Callable:
    """This module's function in place of nnU-Net's default one (same keyword arguments); any other unchanged."""
    if isinstance(resampling_fn, partial) and resampling_fn.func is default_resampling.resample_data_or_seg_to_shape:
        return partial(resample_data_or_seg_to_shape, *resampling_fn.args, **resampling_fn.keywords)
    return resampling_fn


class BoundedResamplingConfiguration(ConfigurationManager):
    """A plans configuration whose nnU-Net default resampling functions are this module's.

    Build it from the configuration dict (``ConfigurationManager.configuration``) and give it to
    one predictor: its preprocessing (image and non-zero mask) and the resampling of logits back
    to the input grid then use the bounded functions. A configuration that names another
    resampling function keeps it.
    """

    @property
    def resampling_fn_data(self) -> Callable:
        return _bounded(super().resampling_fn_data)

    @property
    def resampling_fn_seg(self) -> Callable:
        return _bounded(super().resampling_fn_seg)

    @property
    def resampling_fn_probabilities(self) -> Callable:
        return _bounded(super().resampling_fn_probabilities)
