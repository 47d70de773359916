"""logits_to_labels (one class at a time) gives what nnU-Net's all-classes conversion gives.

Exactly with ``resampling="nnunet"``; with the default PyTorch resampling, equal except where two
classes' resampled logits are tied to within float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_student import tiny_dataset_json, tiny_plans

from recokd.errors import CancelledError, RecokdError
from recokd.inference.label_map import logits_to_labels, smallest_unsigned_dtype
from recokd.inference.progress import CancelToken
from recokd.inference.resampling import BoundedResamplingConfiguration
from recokd.inference.torch_resampling import linear_resampling_arguments


def _managers(spacing, transpose, **resampling_kwargs):
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

    plans = tiny_plans(spacing=spacing, transpose=transpose)
    plans["configurations"]["3d_fullres"]["resampling_fn_probabilities_kwargs"].update(resampling_kwargs)
    plans_manager = PlansManager(plans)
    configuration = ConfigurationManager(plans_manager.get_configuration("3d_fullres").configuration)
    return plans_manager, configuration, plans_manager.get_label_manager(tiny_dataset_json())


def _case(original_spacing_zyx, target_spacing_zyx, cropped_shape, transpose, seed=0):
    """Random smooth logits at the preprocessed size, and the properties nnU-Net's preprocessor would record."""
    rng = np.random.default_rng(seed)
    spacing_t = [original_spacing_zyx[i] for i in transpose]
    target_t = [target_spacing_zyx[i] for i in transpose]
    preprocessed = [round(n * s / t) for n, s, t in zip(cropped_shape, spacing_t, target_t)]
    coarse = torch.from_numpy(rng.normal(size=(3, *[max(2, n // 3) for n in preprocessed])).astype(np.float32))
    logits = torch.nn.functional.interpolate(coarse[None], size=preprocessed, mode="trilinear")[0].half()
    before = [n + 4 for n in cropped_shape]
    properties = {
        "spacing": list(original_spacing_zyx),
        "shape_before_cropping": tuple(before),
        "bbox_used_for_cropping": [[2, 2 + n] for n in cropped_shape],
        "shape_after_cropping_and_before_resampling": tuple(cropped_shape),
    }
    return logits, properties


CASES = [
    ((1.5, 0.8, 0.8), (1.0, 1.0, 1.0), (0, 1, 2)),  # isotropic-ish resampling
    ((4.0, 0.9, 0.9), (1.0, 1.0, 1.0), (0, 1, 2)),  # anisotropic: nnU-Net resamples z separately
    ((1.0, 0.9, 0.9), (3.0, 1.0, 1.0), (0, 1, 2)),  # anisotropic plans: one source slice feeds several
    ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (0, 1, 2)),  # no resampling at all
    ((2.0, 1.0, 0.7), (1.0, 1.0, 1.0), (2, 0, 1)),  # transposed plans
]


def _nnunets_labels_and_logits(logits, properties, plans_manager, configuration, label_manager):
    """nnU-Net's labels, and its resampled logits ``(classes, *cropped shape)`` in float64 to judge ties."""
    from nnunetv2.inference.export_prediction import (
        convert_predicted_logits_to_segmentation_with_correct_shape,
    )

    labels = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits.clone(), plans_manager, configuration, label_manager, dict(properties))
    target_shape = properties["shape_after_cropping_and_before_resampling"]
    original_spacing = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    resampled = configuration.resampling_fn_probabilities(
        logits.clone(), target_shape, configuration.spacing, original_spacing)
    return labels, np.asarray(resampled, dtype=np.float64)


@pytest.mark.parametrize("original, target, transpose", CASES)
def test_nnunet_resampling_matches_nnunets_conversion_bit_for_bit(original, target, transpose):
    plans_manager, configuration, label_manager = _managers(target, transpose)
    cropped = [11, 14, 9]
    logits, properties = _case(original, target, [cropped[i] for i in transpose], transpose)
    expected, _ = _nnunets_labels_and_logits(logits, properties, plans_manager, configuration, label_manager)
    labels = logits_to_labels(logits, dict(properties), plans_manager, configuration, label_manager,
                              resampling="nnunet")
    assert labels.dtype == np.uint8 and labels.flags.c_contiguous
    assert labels.shape == expected.shape
    assert len(np.unique(labels)) == 3  # the case exercises every class
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("order_z", [0, 1])
@pytest.mark.parametrize("original, target, transpose", CASES)
def test_torch_resampling_matches_nnunets_conversion_up_to_float32_ties(original, target, transpose, order_z):
    plans_manager, configuration, label_manager = _managers(target, transpose, order_z=order_z)
    cropped = [11, 14, 9]
    logits, properties = _case(original, target, [cropped[i] for i in transpose], transpose)
    assert linear_resampling_arguments(configuration.resampling_fn_probabilities)["order_z"] == order_z
    expected, resampled = _nnunets_labels_and_logits(logits, properties, plans_manager, configuration, label_manager)
    labels = logits_to_labels(logits, dict(properties), plans_manager, configuration, label_manager)
    assert labels.dtype == np.uint8 and labels.flags.c_contiguous and labels.shape == expected.shape
    assert len(np.unique(labels)) == 3
    # voxels that differ: only where nnU-Net's own resampled logits of the two labels are tied
    differ = np.flatnonzero(labels.transpose(plans_manager.transpose_forward) != expected.transpose(
        plans_manager.transpose_forward))
    crop = tuple(slice(lo, hi) for lo, hi in properties["bbox_used_for_cropping"])
    ours = labels.transpose(plans_manager.transpose_forward)[crop].ravel()
    theirs = expected.transpose(plans_manager.transpose_forward)[crop].ravel()
    flat = resampled.reshape(3, -1)
    mismatch = np.flatnonzero(ours != theirs)
    assert len(differ) == len(mismatch)  # nothing differs outside the crop
    gaps = np.abs(flat[ours[mismatch], mismatch] - flat[theirs[mismatch], mismatch])
    assert np.all(gaps < 1e-4), gaps


def test_torch_resampling_is_used_only_where_it_reproduces_nnunets_function():
    _, configuration, _ = _managers((1.0, 1.0, 1.0), (0, 1, 2))
    bounded = BoundedResamplingConfiguration(configuration.configuration)
    expected = {"order_z": 0, "force_separate_z": None, "separate_z_anisotropy_threshold": 3}
    assert linear_resampling_arguments(configuration.resampling_fn_probabilities) == expected  # nnU-Net's own
    assert linear_resampling_arguments(bounded.resampling_fn_probabilities) == expected  # the bounded equal
    assert linear_resampling_arguments(bounded.resampling_fn_data) is None  # cubic: scipy only
    _, cubic, _ = _managers((1.0, 1.0, 1.0), (0, 1, 2), order=3)
    assert linear_resampling_arguments(cubic.resampling_fn_probabilities) is None
    _, order_z_3, _ = _managers((1.0, 1.0, 1.0), (0, 1, 2), order_z=3)
    assert linear_resampling_arguments(order_z_3.resampling_fn_probabilities) is None
    assert linear_resampling_arguments(lambda data, *args: data) is None  # a custom function


def test_a_configuration_torch_cannot_reproduce_takes_nnunets_path():
    plans_manager, configuration, label_manager = _managers((1.0, 1.0, 1.0), (0, 1, 2), order=3)
    logits, properties = _case((1.5, 0.8, 0.8), (1.0, 1.0, 1.0), [11, 14, 9], (0, 1, 2))
    expected, _ = _nnunets_labels_and_logits(logits, properties, plans_manager, configuration, label_manager)
    labels = logits_to_labels(logits, dict(properties), plans_manager, configuration, label_manager)
    np.testing.assert_array_equal(labels, expected)


def test_unknown_resampling_is_refused():
    plans_manager, configuration, label_manager = _managers((1.0, 1.0, 1.0), (0, 1, 2))
    logits, properties = _case((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), [8, 8, 8], (0, 1, 2))
    with pytest.raises(RecokdError, match="Unknown resampling 'cubic'"):
        logits_to_labels(logits, dict(properties), plans_manager, configuration, label_manager, resampling="cubic")


@pytest.mark.parametrize("resampling", ["torch", "nnunet"])
def test_reports_each_class_and_honours_cancel(resampling):
    plans_manager, configuration, label_manager = _managers((1.0, 1.0, 1.0), (0, 1, 2))
    logits, properties = _case((1.5, 1.0, 1.0), (1.0, 1.0, 1.0), [8, 8, 8], (0, 1, 2))
    seen = []
    logits_to_labels(logits, dict(properties), plans_manager, configuration, label_manager,
                     on_class=lambda done, total: seen.append((done, total)), resampling=resampling)
    assert seen == [(1, 3), (2, 3), (3, 3)]

    token = CancelToken()

    def cancel_after_first(done: int, total: int) -> None:
        token.cancel("stop")

    with pytest.raises(CancelledError):
        logits_to_labels(logits, dict(properties), plans_manager, configuration, label_manager,
                         cancel=token, on_class=cancel_after_first, resampling=resampling)


@pytest.mark.parametrize("value, dtype", [(0, np.uint8), (255, np.uint8), (256, np.uint16), (65535, np.uint16),
                                          (65536, np.uint32)])
def test_smallest_unsigned_dtype(value, dtype):
    assert smallest_unsigned_dtype(value) == np.dtype(dtype)
