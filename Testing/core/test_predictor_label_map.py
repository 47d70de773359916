"""logits_to_labels (one class at a time) gives exactly what nnU-Net's all-classes conversion gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_student import tiny_dataset_json, tiny_plans

from recokd.errors import CancelledError
from recokd.inference.label_map import logits_to_labels, smallest_unsigned_dtype
from recokd.inference.progress import CancelToken


def _managers(spacing, transpose):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(tiny_plans(spacing=spacing, transpose=transpose))
    configuration = plans_manager.get_configuration("3d_fullres")
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


@pytest.mark.parametrize(
    "original, target, transpose",
    [
        ((1.5, 0.8, 0.8), (1.0, 1.0, 1.0), (0, 1, 2)),  # isotropic-ish resampling
        ((4.0, 0.9, 0.9), (1.0, 1.0, 1.0), (0, 1, 2)),  # anisotropic: nnU-Net resamples z separately
        ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (0, 1, 2)),  # no resampling at all
        ((2.0, 1.0, 0.7), (1.0, 1.0, 1.0), (2, 0, 1)),  # transposed plans
    ],
)
def test_matches_nnunets_conversion(original, target, transpose):
    from nnunetv2.inference.export_prediction import (
        convert_predicted_logits_to_segmentation_with_correct_shape,
    )

    plans_manager, configuration, label_manager = _managers(target, transpose)
    cropped = [11, 14, 9]
    logits, properties = _case(original, target, [cropped[i] for i in transpose], transpose)
    expected = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits.clone(), plans_manager, configuration, label_manager, dict(properties)
    )
    labels = logits_to_labels(logits, dict(properties), plans_manager, configuration, label_manager)
    assert labels.dtype == np.uint8 and labels.flags.c_contiguous
    assert labels.shape == expected.shape
    assert len(np.unique(labels)) == 3  # the case exercises every class
    np.testing.assert_array_equal(labels, expected)


def test_reports_each_class_and_honours_cancel():
    plans_manager, configuration, label_manager = _managers((1.0, 1.0, 1.0), (0, 1, 2))
    logits, properties = _case((1.5, 1.0, 1.0), (1.0, 1.0, 1.0), [8, 8, 8], (0, 1, 2))
    seen = []
    logits_to_labels(logits, dict(properties), plans_manager, configuration, label_manager,
                     on_class=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]

    token = CancelToken()

    def cancel_after_first(done: int, total: int) -> None:
        token.cancel("stop")

    with pytest.raises(CancelledError):
        logits_to_labels(logits, dict(properties), plans_manager, configuration, label_manager,
                         cancel=token, on_class=cancel_after_first)


@pytest.mark.parametrize("value, dtype", [(0, np.uint8), (255, np.uint8), (256, np.uint16), (65535, np.uint16),
                                          (65536, np.uint32)])
def test_smallest_unsigned_dtype(value, dtype):
    assert smallest_unsigned_dtype(value) == np.dtype(dtype)
