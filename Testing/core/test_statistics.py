"""Paired per-case statistics: CIs and p-values from scipy, verdicts judged on the interval alone."""

from __future__ import annotations

import numpy as np
import pytest

from recokd.evaluate.statistics import paired_difference, per_case_values, seed_spread, verdict


def cases(values: dict[str, dict[str, float | None]], metric: str = "dice") -> list[dict]:
    return [{"case": case, metric: by_class} for case, by_class in values.items()]


def test_per_case_values_average_classes_then_seeds_and_skip_undefined_classes():
    seed_0 = cases({"a": {"x": 0.8, "y": 0.6}, "b": {"x": 0.5, "y": None}, "c": {"x": None, "y": None}})
    seed_1 = cases({"a": {"x": 0.6, "y": 0.6}, "b": {"x": 0.7, "y": 0.9}, "c": {"x": None, "y": None}})
    values = per_case_values([seed_0, seed_1], "dice")
    assert values == pytest.approx({"a": (0.7 + 0.6) / 2, "b": (0.5 + 0.8) / 2})
    assert "c" not in values, "a case undefined in every run is left out"


def test_a_clear_shift_is_evidence_and_its_interval_holds_the_true_difference():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.9, 60)
    a = {f"case{i}": v + 0.02 + rng.normal(0, 0.005) for i, v in enumerate(base)}
    b = {f"case{i}": v for i, v in enumerate(base)}
    difference = paired_difference(a, b)
    assert difference.cases == 60
    assert difference.ci_low < 0.02 < difference.ci_high and difference.ci_low > 0
    assert difference.p_value < 1e-6
    assert verdict(difference) == "a better"
    assert verdict(paired_difference(b, a)) == "a worse"
    assert verdict(difference, higher_is_better=False) == "a worse", "for HD95 higher is worse"


def test_noise_around_zero_is_no_evidence_whatever_the_sign_of_the_mean():
    rng = np.random.default_rng(1)
    a = {f"case{i}": v for i, v in enumerate(rng.normal(0.8, 0.05, 42))}
    b = {f"case{i}": v for i, v in enumerate(rng.normal(0.8, 0.05, 42))}
    difference = paired_difference(a, b)
    assert difference.ci_low < 0 < difference.ci_high
    assert difference.p_value > 0.05
    assert verdict(difference) == "no evidence either way"


def test_identical_arms_differ_by_exactly_zero_with_an_undefined_rank_test():
    a = {"x": 0.5, "y": 0.7, "z": 0.9}
    difference = paired_difference(a, dict(a))
    assert (difference.mean, difference.ci_low, difference.ci_high, difference.p_value) == (0.0, 0.0, 0.0, None)
    assert verdict(difference) == "no evidence either way"


def test_only_cases_both_arms_define_are_paired():
    difference = paired_difference({"x": 0.5, "y": 0.7, "z": 0.1}, {"x": 0.4, "y": 0.6})
    assert difference.cases == 2 and difference.mean == pytest.approx(0.1)
    assert paired_difference({"x": 0.5}, {"x": 0.4}) is None
    assert verdict(None) == "not measured"


def test_the_bootstrap_is_seeded_so_a_report_renders_the_same_interval_twice():
    rng = np.random.default_rng(2)
    a = {f"c{i}": v for i, v in enumerate(rng.normal(0.8, 0.05, 30))}
    b = {f"c{i}": v for i, v in enumerate(rng.normal(0.79, 0.05, 30))}
    assert paired_difference(a, b) == paired_difference(a, b)


def test_seed_spread_is_the_mean_and_sample_standard_deviation():
    mean, sd = seed_spread([0.80, 0.82, None, 0.84])
    assert mean == pytest.approx(0.82) and sd == pytest.approx(0.02)
    assert seed_spread([0.8]) == (0.8, None)
    assert seed_spread([None]) == (None, None)
