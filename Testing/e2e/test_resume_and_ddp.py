"""Interrupted distillation resumes exactly; distillation runs under torchrun on 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import DATASET, json_lines

from recokd.nnunet.checkpoint import load_checkpoint


def _student_fold(pipeline, trainer: str = "ReCoKDTrainer"):
    return pipeline.work_dir / "nnUNet_results" / DATASET / f"{trainer}__nnUNetPlans_ReCoKD_w8__3d_fullres" / "fold_0"


def test_killed_distillation_resumes_from_last_epoch_with_same_options(tiny_pipeline):
    fold = _student_fold(tiny_pipeline)
    args = [sys.executable, "-m", "recokd", "distill", "--teacher", str(tiny_pipeline.teacher), "--dataset", DATASET,
            "--work-dir", str(tiny_pipeline.work_dir), "--device", "cpu", "--width", "1/8", "--progress", "none",
            "--no-export", "--epochs", "4", "--iterations-per-epoch", "2", "--val-iterations", "1"]
    process = subprocess.Popen(args, env=tiny_pipeline.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = fold / "checkpoint_latest.pth"
    deadline = time.monotonic() + 300
    while not latest.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # as hard as an interruption gets
    process.wait()
    assert latest.exists(), "a checkpoint is written after every epoch"
    saved = load_checkpoint(latest)  # loads: atomic writes leave no corrupt "latest"
    epochs_done = saved["current_epoch"]
    assert 1 <= epochs_done < 4

    changed = tiny_pipeline.distill("--width", "1/8", "--progress", "none", "--no-export", "--epochs", "4",
                                    "--iterations-per-epoch", "2", "--val-iterations", "1", "--resume",
                                    "--kd-weight", "0.5", check=False)
    assert changed.returncode == 2 and "different distillation options" in changed.stderr

    resumed = tiny_pipeline.distill("--width", "1/8", "--progress", "json", "--no-export", "--epochs", "4",
                                    "--iterations-per-epoch", "2", "--val-iterations", "1", "--resume")
    epochs_reported = [e["epoch"] for e in json_lines(resumed.stdout) if e["event"] == "progress"]
    assert epochs_reported == list(range(epochs_done + 1, 5)), "continues after the checkpoint, not from scratch"
    final = load_checkpoint(fold / "checkpoint_final.pth")
    assert final["current_epoch"] == 4
    assert final["recokd"]["ema_updates"] == 4 * 2, "EMA state carried across the interruption"
    assert final["recokd"]["options"] == saved["recokd"]["options"]


@pytest.mark.skipif(sys.platform == "win32", reason="gloo on Windows is not exercised here")
def test_distillation_runs_under_torchrun_with_two_cpu_processes(tiny_pipeline, tmp_path):
    # Each rank's streams go to their own files: two ranks writing one unbuffered pipe interleave word by word.
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "--log-dir", str(tmp_path), "--redirects", "3", "-m", "recokd",
         "distill", "--teacher", str(tiny_pipeline.teacher), "--dataset", DATASET, "--work-dir",
         str(tiny_pipeline.work_dir), "--device", "cpu", "--width", "1/8", "--mode", "logit", "--progress", "json",
         "--no-export", "--epochs", "1", "--iterations-per-epoch", "2", "--val-iterations", "1"],
        env=tiny_pipeline.env, capture_output=True, text=True, timeout=600)
    logs = {stream: [_rank_log(tmp_path, rank, stream) for rank in (0, 1)] for stream in ("stdout", "stderr")}
    assert result.returncode == 0, logs["stderr"][0][-3000:] + logs["stderr"][1][-3000:]
    global_batch = _plans_batch_size(tiny_pipeline)
    per_rank = [int(re.search(rf"^worker {rank} batch_size (\d+)$", logs["stderr"][rank], re.M).group(1))
                for rank in (0, 1)]
    assert sum(per_rank) == global_batch and min(per_rank) >= 1, "the batch is split over the two ranks"
    assert [e["event"] for e in json_lines(logs["stdout"][0])] == ["progress", "result"]
    assert logs["stdout"][1] == "", "only rank 0 reports"
    assert load_checkpoint(_student_fold(tiny_pipeline, "ReCoKDTrainer_logitKD") / "checkpoint_final.pth")


def _rank_log(log_dir, rank: int, stream: str) -> str:
    """torchrun writes ``<log-dir>/<run id>/attempt_0/<rank>/<stream>.log``."""
    (path,) = log_dir.glob(f"*/attempt_0/{rank}/{stream}.log")
    return path.read_text()


def _plans_batch_size(pipeline) -> int:
    plans = json.loads((pipeline.preprocessed / "nnUNetPlans.json").read_text())
    return plans["configurations"]["3d_fullres"]["batch_size"]
