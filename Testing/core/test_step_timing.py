"""Step timing: untimed warm-up rounds, then the steps in alternation, each timed alone."""

import pytest
import torch

from recokd.evaluate.step_timing import StepTiming, time_alternately


def test_warm_up_rounds_are_not_timed_and_steps_alternate():
    calls = []
    times = time_alternately({"kd": lambda: calls.append("kd"), "plain": lambda: calls.append("plain")},
                             repeats=3, warmup=2, device=torch.device("cpu"))
    assert calls == ["kd", "plain"] * 5
    assert {name: len(values) for name, values in times.items()} == {"kd": 3, "plain": 3}
    assert all(t >= 0 for values in times.values() for t in values)


def test_ratio_is_kd_step_over_plain_step_and_recorded():
    timing = StepTiming("recokd", kd_step_s=0.3, plain_step_s=0.2, steps=10, warmup=2, device="cpu",
                        batch_shape=(2, 1, 32, 32, 32), width="1/4", threads=2)
    assert timing.ratio == pytest.approx(1.5)
    assert timing.to_dict()["ratio"] == pytest.approx(1.5)
    assert timing.to_dict()["batch_shape"] == [2, 1, 32, 32, 32]
