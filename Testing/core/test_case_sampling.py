"""Labeled and teacher-labelled cases drawn at a set share, and the options that go with a scans dataset."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as nnunet_trainer_module

from recokd.distill.options import KDOptions
from recokd.errors import RecokdError
from recokd.nnunet.case_sampling import case_probabilities, sampling_probabilities

CASES = ["a", "b", "c", "d", "e"]
TEACHER = frozenset({"b", "c", "d", "e"})


def test_each_draw_is_labeled_with_the_given_share_however_few_labels_there_are():
    p = case_probabilities(CASES, TEACHER, 0.5)
    assert p.sum() == pytest.approx(1) and p[0] == pytest.approx(0.5)
    assert np.allclose(p[1:], 0.125)
    assert case_probabilities(CASES, TEACHER, 0.0)[0] == 0


@pytest.mark.parametrize("teacher, share", [(TEACHER, -1), (frozenset(), 0.5), (frozenset(CASES), 0.5)])
def test_without_a_share_or_without_both_kinds_every_case_is_drawn_equally(teacher, share):
    assert case_probabilities(CASES, teacher, share) is None


def test_the_trainers_loaders_get_the_probabilities_and_nnunets_loader_comes_back(monkeypatch):
    built = []
    recording = lambda data, *args, **kwargs: built.append(kwargs["sampling_probabilities"])  # noqa: E731
    monkeypatch.setattr(nnunet_trainer_module, "nnUNetDataLoader", recording)
    with sampling_probabilities(lambda identifiers: np.full(len(identifiers), 1 / len(identifiers))):
        nnunet_trainer_module.nnUNetDataLoader(SimpleNamespace(identifiers=["a", "b"]), 2, sampling_probabilities=None)
    assert nnunet_trainer_module.nnUNetDataLoader is recording
    assert np.allclose(built[0], [0.5, 0.5])


@pytest.mark.parametrize("options, message", [
    ({"mode": "logit", "soft_target_weight": 1.0}, "already distils the logits"),
    ({"mode": "none", "soft_target_weight": 1.0}, "runs no teacher"),
    ({"labeled_share": 1.5}, "labeled_share must be in"),
    ({"soft_target_weight": -1.0}, "soft_target_weight must be >= 0"),
])
def test_scan_options_out_of_range_are_refused(options, message):
    with pytest.raises(RecokdError, match=message):
        KDOptions.from_dict(options)
