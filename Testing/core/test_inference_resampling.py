"""The predictor's bounded resampling equals nnU-Net's default resampling, in a fraction of its memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.preprocessing.resampling import default_resampling
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from tiny_student import oblique_volume, tiny_package, tiny_plans

from recokd.inference import resampling
from recokd.inference.predictor import StudentPredictor
from recokd.inference.resampling import (
    BoundedResamplingConfiguration,
    resample_data_or_seg,
    resample_data_or_seg_to_shape,
)


def _volume(axis: int, source_length: int, is_seg: bool, seed: int = 0) -> np.ndarray:
    """``(2, ...)`` with ``source_length`` slices along ``axis`` and a 33 x 29 plane: labels -1..3 or noise."""
    rng = np.random.default_rng(seed)
    shape = [33, 29]
    shape.insert(axis, source_length)
    if is_seg:
        return rng.integers(-1, 4, size=(2, *shape)).astype(np.int8)
    return (rng.normal(size=(2, *shape)) * 100).astype(np.float32)


def _target(axis: int, target_length: int) -> tuple[int, int, int]:
    shape = [20, 41]  # one in-plane axis shrinks, the other grows
    shape.insert(axis, target_length)
    return tuple(shape)


# Along the axis: up, down, 8 -> 4 and 6 -> 4 (source coordinates exactly half way between
# slices: scipy rounds those up), 7 -> 7 (only the plane changes), and 1 slice -> 5.
LENGTHS = [(7, 16), (7, 3), (8, 4), (6, 4), (7, 7), (1, 5)]


@pytest.mark.parametrize("source_length, target_length", LENGTHS)
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("order_z", [0, 1])
@pytest.mark.parametrize("is_seg", [False, True])
def test_separate_z_equals_nnunet_bit_for_bit(source_length, target_length, axis, order_z, is_seg):
    data = _volume(axis, source_length, is_seg)
    target = _target(axis, target_length)
    order = 1 if is_seg else 3  # nnU-Net's defaults for segmentations and images
    expected = default_resampling.resample_data_or_seg(data, target, is_seg, axis, order, True, order_z=order_z)
    result = resample_data_or_seg(data, target, is_seg, axis, order, True, order_z=order_z)
    assert result.dtype == expected.dtype and result.shape == expected.shape
    assert np.array_equal(result, expected)


@pytest.mark.parametrize("dtype_out", [None, np.float64])
def test_float16_logits_with_linear_steps_equal_nnunet(dtype_out):
    logits = torch.from_numpy(_volume(0, 9, is_seg=False)[:1].astype(np.float16))
    for order_z in (0, 1):
        args = (logits.numpy(), (23, 20, 41), False, 0, 1, True, order_z, dtype_out)
        expected = default_resampling.resample_data_or_seg(*args)
        result = resample_data_or_seg(*args)
        assert result.dtype == expected.dtype and np.array_equal(result, expected)


@pytest.mark.parametrize(
    "current_spacing, new_spacing, new_shape",
    [
        ((3.0, 0.8, 0.8), (1.0, 1.0, 1.0), (21, 26, 23)),  # anisotropic input: separate z along axis 0
        ((0.8, 0.8, 3.0), (1.0, 1.0, 1.0), (6, 26, 21)),  # anisotropic along the last axis
        ((1.5, 0.8, 1.2), (1.0, 1.0, 1.0), (10, 26, 35)),  # isotropic enough: nnU-Net's own path
        ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (7, 33, 29)),  # nothing to resample: the input itself
    ],
)
def test_to_shape_with_torch_input_equals_nnunet(current_spacing, new_spacing, new_shape):
    data = torch.from_numpy(_volume(0, 7, is_seg=False)[:1])
    kwargs = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    expected = default_resampling.resample_data_or_seg_to_shape(data, new_shape, current_spacing, new_spacing, **kwargs)
    result = resample_data_or_seg_to_shape(data, new_shape, current_spacing, new_spacing, **kwargs)
    assert result.dtype == expected.dtype and np.array_equal(result, expected)


def test_configuration_swaps_only_nnunets_default_function():
    configuration = tiny_plans()["configurations"]["3d_fullres"]
    configuration["resampling_fn_seg"] = "resample_torch_fornnunet"
    configuration["resampling_fn_seg_kwargs"] = {"is_seg": True}
    bounded = BoundedResamplingConfiguration(configuration)
    for fn, kwargs in [
        (bounded.resampling_fn_data, configuration["resampling_fn_data_kwargs"]),
        (bounded.resampling_fn_probabilities, configuration["resampling_fn_probabilities_kwargs"]),
    ]:
        assert fn.func is resample_data_or_seg_to_shape and fn.keywords == kwargs
    assert bounded.resampling_fn_seg.func.__name__ == "resample_torch_fornnunet"
    assert bounded.resampling_fn_seg.keywords == {"is_seg": True}
    # nnU-Net's own manager for the same plans is untouched
    assert PlansManager(tiny_plans()).get_configuration("3d_fullres").resampling_fn_data.func is (
        default_resampling.resample_data_or_seg_to_shape
    )


def test_predictor_labels_unchanged_on_an_anisotropic_volume(monkeypatch):
    package = tiny_package(seed=3)
    image = oblique_volume(size_xyz=(30, 26, 10), spacing=(0.8, 1.1, 2.5))  # 2.5 / 0.8 > 3: separate z
    array, spacing = sitk.GetArrayFromImage(image), image.GetSpacing()
    predictor = StudentPredictor(package, device="cpu", mirroring=False, threads=1, resampling="nnunet")

    separate_z_calls = []
    bounded_fn = resampling.resample_data_or_seg

    def spy(data, new_shape, is_seg=False, axis=None, order=3, do_separate_z=False, **kwargs):
        separate_z_calls.append(do_separate_z)
        return bounded_fn(data, new_shape, is_seg, axis, order, do_separate_z, **kwargs)

    monkeypatch.setattr(resampling, "resample_data_or_seg", spy)
    bounded = predictor.predict_array(array, spacing)
    assert len(separate_z_calls) == 2 + 3 and all(separate_z_calls)  # image, mask, then 3 classes of logits

    nnunet_own = PlansManager(package.plans).get_configuration(package.configuration)
    predictor._nnunet.configuration_manager = nnunet_own  # white box: nnU-Net's default resampling
    expected = predictor.predict_array(array, spacing)
    assert len(separate_z_calls) == 5
    assert len(np.unique(expected)) > 1
    assert bounded.dtype == expected.dtype and np.array_equal(bounded, expected)


def test_torch_resampling_agrees_with_nnunets_on_an_anisotropic_volume():
    """The predictor's default (PyTorch) resampling against nnU-Net's arithmetic, same network and logits."""
    package = tiny_package(seed=3)
    image = oblique_volume(size_xyz=(30, 26, 10), spacing=(0.8, 1.1, 2.5))  # separate z, several slices picked
    array, spacing = sitk.GetArrayFromImage(image), image.GetSpacing()
    fast = StudentPredictor(package, device="cpu", backend="torch", mirroring=False, threads=1)
    assert fast.resampling == "torch"
    labels = fast.predict_array(array, spacing)
    exact = StudentPredictor(package, device="cpu", backend="torch", mirroring=False, threads=1, resampling="nnunet")
    expected = exact.predict_array(array, spacing)
    assert labels.dtype == expected.dtype and labels.shape == expected.shape
    assert len(np.unique(expected)) > 1
    assert np.mean(labels == expected) >= 0.999


@pytest.mark.parametrize("is_seg, order, order_z", [(False, 3, 0), (False, 1, 1)])
def test_peak_memory_is_the_output_plus_a_few_slices(is_seg, order, order_z):
    data = np.random.default_rng(0).normal(size=(1, 20, 256, 256)).astype(np.float32)
    target = (60, 256, 256)
    output_bytes = 60 * 256 * 256 * 4
    slice_bytes = 256 * 256 * 8  # one float64 plane

    def peak(fn) -> int:
        tracemalloc.start()
        try:
            fn(data, target, is_seg, 0, order, True, order_z=order_z)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    ours, nnunet = peak(resample_data_or_seg), peak(default_resampling.resample_data_or_seg)
    assert ours < output_bytes + 12 * slice_bytes, (ours, nnunet)
    assert ours * 5 < nnunet, (ours, nnunet)
