"""nnU-Net's augmentation worker count is set for one block and never leaks into the next training."""

from __future__ import annotations

import os

import torch

from recokd.nnunet.augmentation import VARIABLE, augmentation_workers, default_worker_count


def test_the_count_holds_inside_the_block_only(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    with augmentation_workers(12):
        assert os.environ[VARIABLE] == "12"
    assert VARIABLE not in os.environ


def test_a_users_count_wins_unless_overridden_and_is_restored(monkeypatch):
    monkeypatch.setenv(VARIABLE, "3")
    with augmentation_workers(12):
        assert os.environ[VARIABLE] == "3"
    with augmentation_workers(0, override=True):
        assert os.environ[VARIABLE] == "0"
    assert os.environ[VARIABLE] == "3"


def test_defaults_follow_nnunet_on_a_gpu_and_stay_in_process_on_small_cpus():
    assert default_worker_count(torch.device("cuda"), cores=16) == 12
    assert default_worker_count(torch.device("cuda"), cores=8) == 8
    assert default_worker_count(torch.device("cpu"), cores=2) == 0
    assert default_worker_count(torch.device("cpu"), cores=16) == 4
