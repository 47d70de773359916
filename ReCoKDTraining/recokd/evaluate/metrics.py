"""Segmentation metrics per class: Dice, HD95 in millimetres, structure volume in millilitres.

Conventions (the same for every model, so comparisons are fair):

* **Dice** of class ``c`` is ``2 |P ∩ R| / (|P| + |R|)`` on the voxels labelled ``c`` in the
  prediction ``P`` and the reference ``R``.

  - both empty (the structure is absent and none is predicted): **NaN**, "undefined", and
    left out of every mean (:func:`nan_mean`): an absent structure says nothing about how well
    it would be segmented;
  - reference empty but something predicted (a false positive structure): **0**;
  - reference present but nothing predicted (a missed structure): **0**.

* **HD95** is the symmetric 95th-percentile Hausdorff distance between the two surfaces in
  millimetres, computed by MONAI's ``compute_hausdorff_distance`` with the voxel spacing
  (no hand-written surface distances). It is **NaN** when either side is empty: no surface,
  no distance. A missed structure therefore shows in Dice (0), not in HD95.

* **Volume** of class ``c`` is the reference's voxel count times the voxel volume, in ml
  (1 ml = 1000 mm^3): the size axis of the small-structure analysis.

Arrays are ``(z, y, x)`` as ``sitk.GetArrayFromImage`` gives them; spacings are given in ITK
order ``(x, y, z)``, as ``image.GetSpacing()`` returns them, and reversed here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from recokd.errors import RecokdError

HD_PERCENTILE = 95


@dataclass(frozen=True)
class CaseMetrics:
    """Metrics of one predicted case, per foreground label value."""

    dice: dict[int, float]
    hd95_mm: dict[int, float]
    volume_ml: dict[int, float]


def dice_score(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty (see the module docstring)."""
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    total = int(prediction.sum()) + int(reference.sum())
    if total == 0:
        return math.nan
    return 2.0 * int(np.logical_and(prediction, reference).sum()) / total


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, labels: Iterable[int]) -> dict[int, float]:
    """``{label: Dice}`` for label maps of equal shape."""
    _check_shapes(prediction, reference)
    return {int(label): dice_score(prediction == label, reference == label) for label in labels}


def hd95_per_class(
    prediction: np.ndarray, reference: np.ndarray, labels: Sequence[int], spacing_xyz: Sequence[float]
) -> dict[int, float]:
    """``{label: HD95 in mm}`` for label maps ``(z, y, x)`` with voxel spacing ``(x, y, z)``; NaN if a side is empty."""
    _check_shapes(prediction, reference)
    labels = [int(label) for label in labels]
    if not labels:
        return {}
    from monai.metrics import compute_hausdorff_distance

    one_hot = [torch.from_numpy(np.stack([array == label for label in labels])[None]) for array in (prediction,
                                                                                                     reference)]
    with warnings.catch_warnings():
        # MONAI warns for every empty mask and about its own deprecated arguments; emptiness is
        # a documented case here (NaN), not something to tell the user about per case.
        warnings.simplefilter("ignore")
        distances = compute_hausdorff_distance(
            one_hot[0], one_hot[1], include_background=True, percentile=HD_PERCENTILE,
            spacing=[float(s) for s in reversed(tuple(spacing_xyz))],
        )
    values = distances[0].tolist()
    return {label: float(value) if math.isfinite(value) else math.nan for label, value in zip(labels, values)}


def volume_ml_per_class(labels_map: np.ndarray, labels: Iterable[int], spacing_xyz: Sequence[float]) -> dict[int, float]:
    """``{label: volume in ml}`` of each label in a label map with voxel spacing ``(x, y, z)`` in mm."""
    voxel_ml = float(np.prod(spacing_xyz)) / 1000.0
    return {int(label): int(np.count_nonzero(labels_map == label)) * voxel_ml for label in labels}


def case_metrics(prediction: sitk.Image, reference: sitk.Image, labels: Sequence[int]) -> CaseMetrics:
    """Dice, HD95 and reference volume per label for a prediction in the reference's geometry."""
    if prediction.GetSize() != reference.GetSize():
        raise RecokdError(f"Prediction size {prediction.GetSize()} differs from the reference's "
                          f"{reference.GetSize()}; predict in the reference label's grid.")
    if not np.allclose(prediction.GetSpacing(), reference.GetSpacing(), rtol=1e-4):
        raise RecokdError(f"Prediction spacing {prediction.GetSpacing()} differs from the reference's "
                          f"{reference.GetSpacing()}.")
    predicted = sitk.GetArrayViewFromImage(prediction)
    expected = sitk.GetArrayViewFromImage(reference)
    spacing = reference.GetSpacing()
    return CaseMetrics(
        dice=dice_per_class(predicted, expected, labels),
        hd95_mm=hd95_per_class(predicted, expected, labels, spacing),
        volume_ml=volume_ml_per_class(expected, labels, spacing),
    )


def nan_mean(values: Iterable[float | None]) -> float:
    """Mean of the defined values (neither NaN nor ``None``); NaN when there are none."""
    defined = [float(v) for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan


def _check_shapes(prediction: np.ndarray, reference: np.ndarray) -> None:
    if np.shape(prediction) != np.shape(reference):
        raise RecokdError(f"Prediction shape {np.shape(prediction)} differs from the reference's "
                          f"{np.shape(reference)}.")
