"""KD options (validation, round trip), stage weights and the lambda ramp."""

import re

import pytest
import torch

from recokd.distill.options import KDOptions
from recokd.distill.schedule import kd_weight_at, stage_weights
from recokd.errors import RecokdError


def test_options_round_trip_through_a_dict():
    options = KDOptions(mode="logit", kd_weight=0.5, ms_ca="affinity", affinity_grid=4)
    assert KDOptions.from_dict(options.to_dict()) == options


def test_options_from_a_partial_dict_keep_the_other_defaults():
    options = KDOptions.from_dict({"alpha": 1, "affinity_grid": 6.0})
    assert options.alpha == 1.0 and isinstance(options.alpha, float)
    assert options.affinity_grid == 6 and isinstance(options.affinity_grid, int)
    assert options.kd_weight == KDOptions().kd_weight


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"mode": "fitnet"}, "mode must be one of recokd, logit, none"),
        ({"ms_ca": "nonlocal"}, "ms_ca must be one of gc, affinity"),
        ({"warmup_fraction": 1.5}, "warmup_fraction"),
        ({"attention_temperature": 0.0}, "attention_temperature"),
        ({"fg_weight": -1.0}, "fg_weight"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"affinity_grid": 2.5}, "affinity_grid must be an integer"),
        ({"kd_weight": "high"}, "kd_weight must be a number"),
        ({"lambda": 0.1}, "Unknown distillation option(s) lambda"),
    ],
)
def test_invalid_options_raise_a_recokd_error_naming_the_problem(bad, message):
    with pytest.raises(RecokdError, match=re.escape(message)):
        KDOptions.from_dict(bad)


def test_direct_construction_is_validated_too():
    with pytest.raises(RecokdError, match="mode"):
        KDOptions(mode="Recokd")


@pytest.mark.parametrize("num_stages", [1, 2, 5])
def test_stage_weights_sum_to_one_and_decrease_with_depth(num_stages):
    weights = stage_weights(num_stages, alpha=0.5)
    assert weights.shape == (num_stages,)
    assert torch.isclose(weights.sum(), torch.tensor(1.0))
    assert torch.all(weights[1:] < weights[:-1])
    assert torch.allclose(weights[1:] / weights[:-1], torch.tensor(2.0**-1.5))


def test_stage_weights_are_uniform_for_alpha_zero():
    assert torch.allclose(stage_weights(4, alpha=0.0), torch.full((4,), 0.25))


def test_lambda_is_zero_at_epoch_zero_linear_then_flat_after_warmup():
    options = KDOptions(kd_weight=0.01, warmup_fraction=0.6)
    ramp = [kd_weight_at(epoch, 100, options) for epoch in range(100)]
    assert ramp[0] == 0.0
    assert ramp[30] == pytest.approx(0.005)
    steps = [b - a for a, b in zip(ramp[:60], ramp[1:61])]
    assert steps == pytest.approx([0.01 / 60] * 60)
    assert ramp[60:] == [0.01] * 40


def test_lambda_is_safe_for_one_epoch_and_no_warmup():
    assert kd_weight_at(0, 1, KDOptions()) == 0.0
    assert kd_weight_at(0, 1, KDOptions(warmup_fraction=0.0)) == 0.01
    assert kd_weight_at(0, 0, KDOptions(warmup_fraction=0.0)) == 0.01


def test_lambda_is_zero_without_kd():
    assert kd_weight_at(90, 100, KDOptions(mode="none")) == 0.0
