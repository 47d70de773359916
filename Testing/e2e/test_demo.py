"""The demo end to end on a micro phantom: the teacher trained once and shipped, students distilled from it.

Run A retrains the teacher (``--retrain-teacher``) and writes its package; run B, in a fresh
work folder, takes that package as the shipped teacher. Every training is seeded, so B's
students match A's to the printed precision: the demo gives the same table twice.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import pytest

from recokd.demo import DemoConfig, run_demo
from recokd.evaluate.report import dice_percent, number_text
from recokd.nnunet.training import Schedule

MICRO = DemoConfig(train_cases=6, test_cases=2, size=32, teacher_width=Fraction(1, 2), width=Fraction(1, 4),
                   teacher_schedule=Schedule(1, 2, 1), student_schedule=Schedule(1, 3, 1))


class Quiet:
    def __init__(self, *args) -> None:
        pass

    def on_epoch(self, *args) -> None:
        pass

    def on_step(self, *args) -> None:
        pass

    def close(self) -> None:
        pass


def printed_scores(summary: dict) -> dict:
    """Dice and HD95 per student and class as the report prints them (Dice in percent, two decimals)."""
    return {key: {"dice": {c: dice_percent(d) for c, d in model["dice_per_class"].items()},
                  "hd95": {c: number_text(h, 2) for c, h in model["hd95_per_class"].items()}}
            for key, model in summary["models"].items() if key != "teacher"}


@pytest.fixture(scope="module")
def shipped_and_reused(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    saved = {k: os.environ.get(k) for k in ("RECOKD_BUNDLED_MODELS_DIR", "nnUNet_n_proc_DA")}
    try:
        os.environ["RECOKD_BUNDLED_MODELS_DIR"] = ""
        trained = run_demo(root / "a", MICRO, lambda title: None, Quiet, retrain_teacher=True)
        bundled = root / "a" / "packages"
        os.environ["RECOKD_BUNDLED_MODELS_DIR"] = str(bundled)
        shipped = run_demo(root / "b", MICRO, lambda title: None, Quiet)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    return root, trained, shipped


def test_retraining_writes_the_teacher_package_with_its_measured_dice(shipped_and_reused):
    root, trained, _ = shipped_and_reused
    from recokd.package.archive import load_package

    assert trained["teacher"] == "trained"
    card = load_package(root / "a" / "packages" / "phantom-teacher.recokd.zip").card
    assert card["name"] == "phantom-teacher"
    assert card["metrics"]["test_dice_per_class"] == trained["models"]["teacher"]["dice_per_class"]
    assert card["demo_config"]["small_structure_scale"] == MICRO.small_structure_scale


def test_the_shipped_teacher_teaches_students_equal_to_the_first_runs_to_the_printed_precision(shipped_and_reused):
    _, trained, shipped = shipped_and_reused
    assert shipped["teacher"] == "shipped" and Path(shipped["packages"]["teacher"]).name == "phantom-teacher.recokd.zip"
    assert list(shipped["models"]) == ["teacher", "student_recokd", "student_plain", "student_plain_random"]
    assert shipped["models"]["teacher"]["dice_per_class"] == trained["models"]["teacher"]["dice_per_class"]
    assert printed_scores(shipped) == printed_scores(trained)
    assert {k: m["init"] for k, m in shipped["models"].items() if k != "teacher"} == {
        "student_recokd": "teacher", "student_plain": "teacher", "student_plain_random": "random"}
