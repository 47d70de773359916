"""Shared pytest set-up: small thread pools (tests use tiny tensors; the CI machine has 2 cores) and a
private models folder for every test."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("nnUNet_compile", "0")


@pytest.fixture(autouse=True)
def private_default_models_dir(monkeypatch, tmp_path):
    """Never touch the real per-user models folder, in this process or in subprocesses; no bundled models unless
    a test asks for them (``RECOKD_BUNDLED_MODELS_DIR``)."""
    monkeypatch.setenv("RECOKD_MODELS_DIR", str(tmp_path / "default-models"))
    monkeypatch.setenv("RECOKD_BUNDLED_MODELS_DIR", "")
