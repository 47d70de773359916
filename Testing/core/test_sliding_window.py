"""The batched sliding window computes nnU-Net's logits: exactly at one patch per pass, to rounding in batches."""

from __future__ import annotations

import pytest
import torch
from tiny_student import tiny_package

from recokd.inference.predictor import StudentPredictor
from recokd.inference.sliding_window import (
    MAX_SAMPLES_PER_FORWARD,
    mirror_combinations,
    samples_per_forward,
)


@pytest.fixture(scope="module")
def package():
    return tiny_package(seed=5)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    """A preprocessed-looking ``(c, z, y, x)`` image: 2 x 3 x 2 tiles of the 16^3 patch at step 0.5 and more."""
    return torch.randn((1, 27, 40, 21), generator=torch.Generator().manual_seed(0))


def _nnunet_logits(package, image: torch.Tensor, mirroring: bool) -> torch.Tensor:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(package.plans)
    reference = nnUNetPredictor(tile_step_size=0.5, use_mirroring=mirroring, perform_everything_on_device=False,
                                device=torch.device("cpu"), allow_tqdm=False)
    network = StudentPredictor(package, device="cpu", backend="torch").network
    reference.manual_initialization(network, plans_manager, plans_manager.get_configuration("3d_fullres"),
                                    [package.state_dict], package.dataset_json, "nnUNetTrainer", (0, 1, 2))
    return reference.predict_sliding_window_return_logits(image)


def _our_logits(package, image: torch.Tensor, mirroring: bool, per_forward: int) -> torch.Tensor:
    predictor = StudentPredictor(package, device="cpu", mirroring=mirroring, backend="torch")
    predictor._nnunet.samples_per_forward = per_forward  # white box: the batch size under test
    return predictor._nnunet.predict_sliding_window_return_logits(image)


@pytest.mark.parametrize("mirroring", [False, True])
def test_one_patch_per_forward_pass_is_bit_identical_to_nnunet(package, image, mirroring):
    torch.testing.assert_close(_our_logits(package, image, mirroring, 1), _nnunet_logits(package, image, mirroring),
                               rtol=0, atol=0)


@pytest.mark.parametrize(("mirroring", "per_forward"), [(False, 4), (True, 3), (True, 8)])
def test_batched_forward_passes_agree_with_nnunet_to_rounding(package, image, mirroring, per_forward):
    """3 per pass splits a tile's 8 mirrored copies across passes; 4 without mirroring batches 4 tiles."""
    ours = _our_logits(package, image, mirroring, per_forward)
    expected = _nnunet_logits(package, image, mirroring)
    assert ours.shape == expected.shape and ours.dtype == expected.dtype == torch.half
    torch.testing.assert_close(ours.float(), expected.float(), rtol=1e-3, atol=2e-3)


def test_mirror_combinations_follow_nnunets_order_with_the_identity_first():
    assert mirror_combinations(None) == [()]
    assert mirror_combinations((0, 1, 2)) == [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]
    assert mirror_combinations((1,)) == [(), (2,)]


def test_samples_per_forward_stays_within_one_and_the_maximum_and_the_memory_budget():
    # A x1/4 Hippocampus student (patch 40x56x40, 8 features, 3 heads): as many as the maximum.
    assert samples_per_forward((40, 56, 40), 8, 3) == MAX_SAMPLES_PER_FORWARD
    # A full-width 128^3 teacher: 6 x 32 + 105 values per voxel, 1.3 GB per patch, one patch per pass.
    assert samples_per_forward((128, 128, 128), 32, 105) == 1
    budget = 350 << 20  # 3.5 patches of 100 MiB
    per_sample = 4 * 64 ** 3 * (6 * 16 + 4)
    assert samples_per_forward((64, 64, 64), 16, 4, budget_bytes=budget) == budget // per_sample == 3
