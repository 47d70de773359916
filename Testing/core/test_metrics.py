"""Dice, HD95 (MONAI) and structure volume on hand-made label maps with known answers."""

import math

import numpy as np
import pytest
import SimpleITK as sitk

from recokd.errors import RecokdError
from recokd.evaluate.metrics import (
    case_metrics,
    dice_per_class,
    dice_score,
    hd95_per_class,
    nan_mean,
    volume_ml_per_class,
)


def cube(shape=(12, 12, 12), lo=(2, 2, 2), hi=(6, 6, 6), label=1) -> np.ndarray:
    array = np.zeros(shape, np.uint8)
    array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = label
    return array


def test_dice_of_overlapping_cubes_is_twice_the_overlap_over_the_sizes():
    a = cube(hi=(6, 6, 6))  # 64 voxels
    b = cube(lo=(4, 2, 2), hi=(8, 6, 6))  # 64 voxels, 32 shared
    assert dice_score(a == 1, b == 1) == pytest.approx(2 * 32 / 128)
    assert dice_score(a == 1, a == 1) == 1.0


def test_dice_is_nan_when_both_are_empty_and_zero_for_a_false_or_missed_structure():
    empty, present = np.zeros((8, 8, 8), np.uint8), cube((8, 8, 8))
    assert math.isnan(dice_score(empty == 1, empty == 1))
    assert dice_score(present == 1, empty == 1) == 0.0  # predicted, absent in the reference
    assert dice_score(empty == 1, present == 1) == 0.0  # missed


def test_undefined_dice_is_left_out_of_means():
    prediction = cube(label=1)
    reference = cube(label=1)
    dice = dice_per_class(prediction, reference, [1, 2])
    assert dice[1] == 1.0 and math.isnan(dice[2])
    assert nan_mean(dice.values()) == 1.0
    assert nan_mean([None, 0.5, math.nan, 1.0]) == 0.75
    assert math.isnan(nan_mean([math.nan, None]))


def plate(axis: int, index: int, shape=(12, 12, 12)) -> np.ndarray:
    """A one-voxel-thick plate perpendicular to array ``axis``: all surface distances between two are equal."""
    array = np.zeros(shape, np.uint8)
    where = [slice(2, 10)] * 3
    where[axis] = slice(index, index + 1)
    array[tuple(where)] = 1
    return array


@pytest.mark.parametrize(("axis", "shift", "expected_mm"), [
    (2, 3, 3 * 0.5),  # array axis 2 is x: spacing[0]
    (1, 2, 2 * 1.0),  # y
    (0, 2, 2 * 2.5),  # array axis 0 is z: spacing[2]
])
def test_hd95_of_shifted_plates_is_the_shift_in_millimetres_with_anisotropic_spacing(axis, shift, expected_mm):
    spacing_xyz = (0.5, 1.0, 2.5)
    hd95 = hd95_per_class(plate(axis, 3), plate(axis, 3 + shift), [1], spacing_xyz)
    assert hd95[1] == pytest.approx(expected_mm)


def test_hd95_is_zero_for_identical_masks_and_nan_when_either_side_is_empty():
    present, empty = cube(), np.zeros((12, 12, 12), np.uint8)
    assert hd95_per_class(present, present, [1], (1, 1, 1))[1] == 0.0
    assert math.isnan(hd95_per_class(empty, present, [1], (1, 1, 1))[1])
    assert math.isnan(hd95_per_class(present, empty, [1], (1, 1, 1))[1])
    assert math.isnan(hd95_per_class(empty, empty, [1], (1, 1, 1))[1])


def test_volume_is_the_voxel_count_times_the_voxel_volume_in_millilitres():
    labels = cube(hi=(4, 4, 4))  # 8 voxels of label 1
    labels[8, 8, 8] = 2
    volumes = volume_ml_per_class(labels, [1, 2, 3], (1.0, 2.0, 3.0))  # 6 mm^3 per voxel
    assert volumes == pytest.approx({1: 8 * 6 / 1000, 2: 6 / 1000, 3: 0.0})


def as_image(array: np.ndarray, spacing=(0.5, 1.0, 2.5)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def test_case_metrics_reads_spacing_from_the_images():
    reference, prediction = plate(0, 3), plate(0, 5)
    metrics = case_metrics(as_image(prediction), as_image(reference), [1])
    assert metrics.dice[1] == 0.0
    assert metrics.hd95_mm[1] == pytest.approx(2 * 2.5)
    assert metrics.volume_ml[1] == pytest.approx(64 * 0.5 * 1.0 * 2.5 / 1000)


def test_case_metrics_refuses_a_prediction_in_another_grid():
    with pytest.raises(RecokdError, match="size"):
        case_metrics(as_image(cube((10, 12, 12))), as_image(cube()), [1])
    with pytest.raises(RecokdError, match="spacing"):
        case_metrics(as_image(cube(), (1, 1, 1)), as_image(cube()), [1])
