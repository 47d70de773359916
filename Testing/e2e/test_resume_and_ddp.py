"""Interrupted distillation resumes exactly; distillation runs under torchrun on 2 CPU processes (gloo)."""

from __future__ import annotations

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
def test_distillation_runs_under_torchrun_with_two_cpu_processes(tiny_pipeline):
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "recokd",
         "distill", "--teacher", str(tiny_pipeline.teacher), "--dataset", DATASET, "--work-dir",
         str(tiny_pipeline.work_dir), "--device", "cpu", "--width", "1/8", "--mode", "logit", "--progress", "json",
         "--no-export", "--epochs", "1", "--iterations-per-epoch", "2", "--val-iterations", "1"],
        env=tiny_pipeline.env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "worker 1 batch_size 1" in result.stdout + result.stderr, "the batch is split over the two ranks"
    events = json_lines(result.stdout)
    assert [e["event"] for e in events] == ["progress", "result"], "only rank 0 reports"
    assert load_checkpoint(_student_fold(tiny_pipeline, "ReCoKDTrainer_logitKD") / "checkpoint_final.pth")
