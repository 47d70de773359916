"""Checks on an input volume before it reaches the network, with messages a user can act on.

nnU-Net would otherwise fail deep inside with an assertion, or worse succeed on garbage: NaN
voxels propagate through normalisation into every tile they touch, so they are refused rather
than silently replaced (which value is right is the user's call).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recokd.errors import RecokdError


def channels_first(image: np.ndarray, channels: int) -> np.ndarray:
    """``image`` as a ``(c, z, y, x)`` view, checked against a model taking ``channels`` inputs.

    Accepts ``(z, y, x)`` for single-channel models and ``(c, z, y, x)`` for any model. The
    dtype is kept (nnU-Net converts to float32 itself, copying once).
    """
    if image.ndim == 3:
        image = image[None]
    elif image.ndim == 2:
        raise RecokdError(
            f"The image is 2D (shape {image.shape}); ReCoKD models segment 3D volumes. "
            "Pass a volume (a stack of slices) instead."
        )
    elif image.ndim != 4:
        raise RecokdError(
            f"The image has {image.ndim} dimensions (shape {image.shape}); expected a 3D volume "
            "(z, y, x) or channels plus volume (c, z, y, x)."
        )
    if image.shape[0] != channels:
        raise RecokdError(
            f"The model takes {channels} input channel(s) but the image has {image.shape[0]} "
            f"(shape {image.shape}). Give a volume with exactly {channels} channel(s)."
        )
    if 0 in image.shape:
        raise RecokdError(f"The image is empty (shape {image.shape}); there is nothing to segment.")
    return image


def non_finite_problem(bad: int, total: int) -> str | None:
    """What to tell the user when ``bad`` of ``total`` voxels are NaN or infinite; None when none are."""
    if bad == 0:
        return None
    if bad == total:
        return "Every voxel of the image is NaN or infinite; the file holds no usable intensities."
    return (
        f"{bad} of {total} voxels are NaN or infinite. Replace them (for example with the "
        "background intensity) before segmenting; ReCoKD does not guess a value."
    )


def check_finite(image: np.ndarray) -> None:
    """Refuse NaN or infinite voxels (integer images cannot hold any)."""
    if not np.issubdtype(image.dtype, np.floating):
        return
    problem = non_finite_problem(image.size - int(np.count_nonzero(np.isfinite(image))), image.size)
    if problem:
        raise RecokdError(problem)


def nnunet_spacing(spacing: Sequence[float]) -> list[float]:
    """Voxel spacing in ITK order ``(x, y, z)`` as nnU-Net's ``SimpleITKIO`` reports it: ``(z, y, x)``, absolute.

    Using exactly the reader's conversion is what makes array-based prediction equal to
    nnU-Net's own file-based prediction.
    """
    values = [float(s) for s in spacing]
    if len(values) != 3 or not all(np.isfinite(values)) or min(abs(v) for v in values) == 0:
        raise RecokdError(f"Voxel spacing must be three non-zero finite numbers (x, y, z), got {tuple(spacing)}.")
    return list(np.abs(values[::-1]))
