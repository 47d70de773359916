"""What a benchmark ran on: the machine and the versions of the packages that produced the numbers."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("recokd", "torch", "nnunetv2", "dynamic_network_architectures", "monai", "numpy", "SimpleITK")


def package_versions() -> dict[str, str | None]:
    """Installed version of each package in :data:`PACKAGES` (``None`` when absent), and Python's.

    ReCoKD run from a source tree (on ``PYTHONPATH``, not installed) reports its own ``__version__``.
    """
    from recokd import __version__

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = __version__ if name == "recokd" else None
    return versions


def machine_description(device: torch.device) -> dict:
    """CPU model, core and thread counts, GPU name (or ``None``) and the device the training used."""
    gpu = torch.cuda.get_device_name(device if device.type == "cuda" else 0) if torch.cuda.is_available() else None
    return {
        "training_device": str(device),
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    """The CPU's marketing name: ``/proc/cpuinfo`` on Linux, else what :mod:`platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if sys.platform.startswith("linux") and cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
