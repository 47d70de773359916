"""Shared pytest set-up: small thread pools (tests use tiny tensors; the CI machine has 2 cores)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("nnUNet_compile", "0")
