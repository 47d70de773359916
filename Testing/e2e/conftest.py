"""A real, tiny nnU-Net pipeline on the synthetic phantom, shared by the end-to-end tests.

Built once per test session through the real command line (subprocesses, files on disk):
phantom -> ``recokd prepare`` (nnU-Net plan + preprocess) -> ``recokd train-teacher``
(nnU-Net's own trainer, one short epoch). Tests then distil, resume, export and segment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

DATASET = "Dataset991_TinyPhantom"
TINY_SCHEDULE = ["--epochs", "1", "--iterations-per-epoch", "2", "--val-iterations", "1"]


def recokd(*args: str, env: dict | None = None, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m recokd ARGS`` in a subprocess, as a user (or the Slicer module) would."""
    # UTF-8 whatever the locale: GDCM sets the C locale in-process once a test has read DICOM
    result = subprocess.run([sys.executable, "-m", "recokd", *args], capture_output=True, text=True,
                            encoding="utf-8", env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"recokd {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@dataclass(frozen=True)
class TinyPipeline:
    work_dir: Path
    env: dict
    teacher: Path

    @property
    def preprocessed(self) -> Path:
        return self.work_dir / "nnUNet_preprocessed" / DATASET

    def distill(self, *extra: str, teacher: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return recokd("distill", "--teacher", str(teacher or self.teacher), "--dataset", DATASET, "--work-dir",
                      str(self.work_dir), "--device", "cpu", *extra, env=self.env, check=check)


def isolated_env() -> dict:
    """This process's environment without the user's nnU-Net folders, augmentation in the main process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env["nnUNet_n_proc_DA"] = "0"
    return env


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> TinyPipeline:
    work_dir = tmp_path_factory.mktemp("pipeline")
    env = isolated_env()
    recokd("phantom", "--out", str(work_dir / "nnUNet_raw" / DATASET), "--cases", "6", "--test-cases", "2",
           "--size", "32", "32", "32", env=env)
    recokd("prepare", "--dataset", DATASET, "--work-dir", str(work_dir), env=env)
    recokd("train-teacher", "--dataset", DATASET, "--work-dir", str(work_dir), "--device", "cpu",
           "--progress", "none", *TINY_SCHEDULE, env=env)
    teacher = work_dir / "nnUNet_results" / DATASET / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    return TinyPipeline(work_dir, env, teacher)


@pytest.fixture(scope="session")
def tiny_teacher_package(tiny_pipeline) -> Path:
    """The tiny teacher exported as a model package (a plain nnU-Net result exports too)."""
    out = tiny_pipeline.work_dir / "packages" / "tiny_teacher.recokd.zip"
    recokd("export", "--result", str(tiny_pipeline.teacher), "-o", str(out), "--name", "tiny-teacher",
           env=tiny_pipeline.env)
    return out


@pytest.fixture(scope="session")
def phantom_test_case(tiny_pipeline) -> tuple[Path, Path]:
    """A held-out phantom (image, reference labels): anisotropic spacing, oblique direction."""
    raw = tiny_pipeline.work_dir / "nnUNet_raw" / DATASET
    return raw / "imagesTs" / "phantom_006_0000.nii.gz", raw / "labelsTs" / "phantom_006.nii.gz"
