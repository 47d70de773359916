"""Concurrent training jobs in real spawned processes: results, failures, and a job that dies."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest

from recokd.errors import RecokdError
from recokd.evaluate.concurrent_training import train_concurrently
from recokd.nnunet.augmentation import workers_per_concurrent_job


def _write_marker(folder: Path, name: str) -> Path:
    """A stand-in training job: records its process id and augmentation workers, returns its folder."""
    target = folder / name
    target.mkdir()
    (target / "pid").write_text(str(os.getpid()))
    (target / "workers").write_text(os.environ["nnUNet_n_proc_DA"])
    return target


def _fail() -> Path:
    raise ValueError("label sets differ")


def _die() -> Path:
    os._exit(3)  # killed without a word: no result message, no exception


def test_every_job_runs_in_its_own_process_with_its_share_of_the_cores(tmp_path, monkeypatch):
    monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)
    folders = train_concurrently({name: partial(_write_marker, tmp_path, name) for name in ("a", "b", "c")})
    assert folders == {name: tmp_path / name for name in ("a", "b", "c")}
    pids = {(tmp_path / name / "pid").read_text() for name in folders}
    assert len(pids) == 3 and str(os.getpid()) not in pids
    assert {(tmp_path / name / "workers").read_text() for name in folders} == {str(workers_per_concurrent_job(3))}


def test_a_set_augmentation_worker_count_is_respected(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "2")
    train_concurrently({"a": partial(_write_marker, tmp_path, "a")})
    assert (tmp_path / "a" / "workers").read_text() == "2"


def test_a_failing_job_fails_the_call_after_the_others_finished(tmp_path):
    with pytest.raises(RecokdError, match=r"bad: ValueError: label sets differ.*resume") as error:
        train_concurrently({"good": partial(_write_marker, tmp_path, "good"), "bad": _fail})
    assert "good" not in str(error.value).split("failed:")[1]
    assert (tmp_path / "good" / "pid").is_file()


def test_a_job_that_dies_without_reporting_is_a_failure_not_a_hang(tmp_path):
    with pytest.raises(RecokdError, match=r"dead: the process ended with exit code 3"):
        train_concurrently({"dead": _die, "good": partial(_write_marker, tmp_path, "good")})


@pytest.mark.parametrize(("jobs", "cores", "expected"), [(3, 16, 4), (3, 2, 1), (1, 16, 15), (4, 4, 1)])
def test_cores_are_shared_out_leaving_one_per_job(jobs, cores, expected):
    assert workers_per_concurrent_job(jobs, cores) == expected
