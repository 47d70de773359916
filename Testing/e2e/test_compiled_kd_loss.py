"""On a GPU the ReCo-KD loss is compiled; its checkpoints must still hold the plain module's state.

Compilation itself is exercised on the GPU benchmark machine (``benchmarks/kd_step_ratio.py``);
here the trainer is told to compile on the CPU, which wraps the loss without running it.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import torch
from conftest import DATASET

from recokd.distill.options import KDOptions
from recokd.nnunet.checkpoint import load_checkpoint
from recokd.nnunet.trainer import ReCoKDTrainer
from recokd.nnunet.training import build_student_trainer
from recokd.workspace import Workspace


def _initialised_student(pipeline, results):
    workspace = dataclasses.replace(Workspace.under(pipeline.work_dir, respect_environment=False), results=results)
    workspace.activate()
    trainer = build_student_trainer(workspace, pipeline.teacher, DATASET, Fraction(1, 4), KDOptions(), 0,
                                    torch.device("cpu"))
    trainer.initialize()
    return trainer


def test_a_compiled_kd_loss_saves_and_resumes_the_plain_modules(tiny_pipeline, tmp_path, monkeypatch):
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, "")  # restored after the test; the workspace sets them
    assert not _initialised_student(tiny_pipeline, tmp_path / "eager")._compile_kd_loss(), "never on a CPU"

    monkeypatch.setattr(ReCoKDTrainer, "_compile_kd_loss", lambda self: True)
    trainer = _initialised_student(tiny_pipeline, tmp_path / "compiled")
    assert hasattr(trainer.kd_loss, "_orig_mod")
    with torch.no_grad():
        trainer.kd_loss._orig_mod.adapters[0].linear.bias.fill_(0.25)
    checkpoint = tmp_path / "checkpoint.pth"
    trainer.save_checkpoint(str(checkpoint))
    saved = load_checkpoint(checkpoint)["recokd"]["kd_modules"]
    assert saved and not any("_orig_mod" in key for key in saved)

    resumed = _initialised_student(tiny_pipeline, tmp_path / "resumed")
    resumed.load_checkpoint(checkpoint)
    assert torch.all(resumed.kd_loss._orig_mod.adapters[0].linear.bias == 0.25)
