"""Logits back to labels on the input grid with PyTorch: nnU-Net's default resampling, as tensor ops.

nnU-Net resamples logits with ``resample_data_or_seg_to_shape`` at ``order=1``: skimage's
``resize`` (linear, ``mode="edge"``, no anti-aliasing) of the whole volume or, when one axis is
anisotropic, of every slice in-plane, then along that axis whole slices are picked
(``order_z=0``, the default) or blended (``order_z=1``). skimage's linear resize samples at pixel
centres and holds the edge value beyond the border; so does
``torch.nn.functional.interpolate(mode="bilinear"/"trilinear", align_corners=False)``, in float32
instead of float64 and on all of PyTorch's threads. The labels equal nnU-Net's except where two
classes' resampled logits are within float32 rounding of each other (``Testing/core/
test_predictor_label_map.py`` checks every differing voxel; ``e2e/test_shipped_models.py``
compares both on the phantom teacher); ``benchmarks/cpu_runtime.py`` times both.

Argmax before resampling, where it changes nothing: picking whole slices commutes with the
argmax, so with ``order_z=0`` each class is resized in-plane only on the distinct source slices
the output picks, the argmax runs there, and the label slices are copied along the axis. A
linear step moves boundaries between classes, so it is never swapped with the argmax.

:mod:`.label_map` runs these steps one class at a time with a running maximum: it holds the
resized class, the running maximum (float32, output-sized) and the labels.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from nnunetv2.preprocessing.resampling import default_resampling

from recokd.inference import resampling

_DEFAULT_FUNCTIONS = (default_resampling.resample_data_or_seg_to_shape, resampling.resample_data_or_seg_to_shape)


def linear_resampling_arguments(resampling_fn: Callable) -> dict | None:
    """The keyword arguments of nnU-Net's default resampling in ``resampling_fn``, when torch can do it.

    ``resampling_fn`` is a configuration's ``resampling_fn_probabilities`` (a ``partial``). Returns
    ``order_z``, ``force_separate_z`` and ``separate_z_anisotropy_threshold`` (the keywords of
    :func:`resampling_steps`) with nnU-Net's defaults filled in, or ``None`` for any other
    function or an order other than linear in-plane and 0 or 1 along the anisotropic axis (cubic
    splines are scipy's alone).
    """
    if not isinstance(resampling_fn, partial) or resampling_fn.func not in _DEFAULT_FUNCTIONS or resampling_fn.args:
        return None
    signature = inspect.signature(default_resampling.resample_data_or_seg_to_shape)
    try:
        bound = signature.bind_partial(**resampling_fn.keywords)
    except TypeError:
        return None
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    if arguments["is_seg"] or arguments["order"] != 1 or arguments["order_z"] not in (0, 1):
        return None
    return {name: arguments[name] for name in ("order_z", "force_separate_z", "separate_z_anisotropy_threshold")}


def resampling_steps(
    source_shape: Sequence[int],
    target_shape: Sequence[int],
    current_spacing: Sequence[float],
    new_spacing: Sequence[float],
    order_z: int = 0,
    force_separate_z: bool | None = None,
    separate_z_anisotropy_threshold: float = 3,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor] | None]:
    """The step each class takes from ``source_shape`` towards ``target_shape``, and the step after the argmax.

    The first maps one class ``(x, y, z)`` to float32; the argmax of those over the classes,
    given to the second (``None``: nothing left to do), gives the labels on ``target_shape``.
    The anisotropic-axis decision and the sampling positions are nnU-Net's
    (``determine_do_sep_z_and_axis``, pixel centres, edge values at the border).
    """
    target_shape = tuple(int(n) for n in target_shape)
    do_separate_z, axis = default_resampling.determine_do_sep_z_and_axis(
        force_separate_z, current_spacing, new_spacing, separate_z_anisotropy_threshold)
    if tuple(source_shape) == target_shape:
        return _as_float, None
    if do_separate_z:
        return _separate_axis_steps(source_shape[axis], target_shape, axis, order_z)
    return partial(_resize, size=target_shape, mode="trilinear"), None


def _as_float(channel: torch.Tensor) -> torch.Tensor:
    """A float32 copy (never the logits themselves: the argmax's running maximum is updated in place)."""
    return channel.to(torch.float32, copy=True)


def _resize(volume: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    """``(*spatial)`` or ``(n, *spatial)`` (``n`` slices resized in 2D) -> resized, float32, like skimage's linear resize."""
    batch = volume.float()[None, None] if mode == "trilinear" else volume.float()[:, None]
    resized = F.interpolate(batch, size=tuple(size), mode=mode, align_corners=False)
    return resized[0, 0] if mode == "trilinear" else resized[:, 0]


def _separate_axis_steps(source_length: int, target_shape: tuple[int, ...], axis: int, order_z: int):
    """The per-class step and the step after the argmax when ``axis`` is resampled separately.

    With whole slices picked (``order_z`` 0, or equal lengths: nnU-Net keeps the resized slices)
    the per-class step resizes only the distinct picked source slices in-plane, and the labels of
    those are copied to every output slice that picks them. With ``order_z`` 1 the per-class
    step resizes the neighbours each output slice needs and blends them with scipy's weights.
    """
    plane_shape = tuple(n for i, n in enumerate(target_shape) if i != axis)
    target_length = target_shape[axis]

    def resized_planes(channel: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        return _resize(channel.movedim(axis, 0)[sources], plane_shape, mode="bilinear")

    if order_z == 0 or source_length == target_length:
        picks = (torch.arange(target_length) if source_length == target_length
                 else torch.from_numpy(resampling.nearest_slices(source_length, target_length)))
        sources, copies = torch.unique(picks, return_inverse=True)

        def place(labels: torch.Tensor) -> torch.Tensor:  # (distinct sources, *plane) -> target
            return labels[copies].movedim(0, axis).contiguous()

        return partial(resized_planes, sources=sources), place

    lo, hi, w_lo, w_hi = resampling.linear_slices(source_length, target_length)
    sources, neighbours = torch.unique(torch.from_numpy(np.concatenate([lo, hi])), return_inverse=True)
    below, above = neighbours[:target_length], neighbours[target_length:]
    shape = (target_length, *([1] * len(plane_shape)))
    weight_below = torch.from_numpy(w_lo).float().reshape(shape)
    weight_above = torch.from_numpy(w_hi).float().reshape(shape)

    def blended(channel: torch.Tensor) -> torch.Tensor:
        planes = resized_planes(channel, sources)
        return (planes[below] * weight_below + planes[above] * weight_above).movedim(0, axis).contiguous()

    return blended, None
