"""Device choice shared by training and inference: ``auto`` means CUDA when present, else CPU."""

from __future__ import annotations

import torch

from recokd.errors import RecokdError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` if available else ``cpu``; asking for CUDA without one is an error."""
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise RecokdError(f"Unknown device '{name}'; use one of {', '.join(DEVICE_CHOICES)}.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RecokdError(f"Device '{name}' was requested but PyTorch sees no CUDA GPU; use --device cpu or auto.")
    return torch.device(name)
