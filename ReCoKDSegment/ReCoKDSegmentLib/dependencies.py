"""Installing the bundled ``recokd`` package (and with it nnU-Net) into Slicer's Python.

torch comes from the PyTorch extension and is never installed here. Everything else is one
``pip install`` of the bundled ``ReCoKDTraining`` folder, run as a background step, under a
constraints file that pins the packages Slicer (or the PyTorch extension) already provides to
their installed versions: pip then either leaves them alone or fails with a clear conflict,
instead of silently replacing Slicer's SimpleITK, its requests, or the PyTorch extension's torch.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

#: Packages that belong to Slicer or to the PyTorch extension.
PROTECTED_PACKAGES = ("SimpleITK", "requests", "torch", "torchvision", "numpy", "vtk")
TRAINING_FOLDER = "ReCoKDTraining"
CPU_RUNTIME_EXTRA = "openvino"
MODELS_FOLDER = "ReCoKDModels"  # the extension's bundled model packages, installed next to the module script
BUNDLED_MODELS_VARIABLE = "RECOKD_BUNDLED_MODELS_DIR"  # where recokd looks for them
_VERSION = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)
_NOT_COPIED = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "*.pyc")


def installed_versions(names: Iterable[str] = PROTECTED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, None when it is not installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def constraints_text(versions: Mapping[str, str | None]) -> str:
    """A pip constraints file pinning every installed package of ``versions`` to its version."""
    lines = [f"{name}=={version}" for name, version in versions.items() if version]
    return "".join(f"{line}\n" for line in lines)


def find_training_package(module_dir: Path) -> Path | None:
    """The bundled ``ReCoKDTraining`` folder: next to the module script in an installed
    extension, one level up in a source checkout."""
    for candidate in (Path(module_dir) / TRAINING_FOLDER, Path(module_dir).parent / TRAINING_FOLDER):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    return None


def find_bundled_models(module_dir: Path) -> Path | None:
    """The model packages shipped with the extension: next to the module script in an installed
    extension, the repository's ``Resources/Models`` in a source checkout."""
    for candidate in (Path(module_dir) / MODELS_FOLDER, Path(module_dir).parent / "Resources" / "Models"):
        if candidate.is_dir():
            return candidate
    return None


def bundled_models_environment(module_dir: Path, environment: Mapping[str, str]) -> dict[str, str]:
    """What to add to ``environment`` so that ``recokd`` processes offer the bundled models (nothing if the
    user already chose a folder, or there is none)."""
    folder = find_bundled_models(module_dir)
    if folder is None or BUNDLED_MODELS_VARIABLE in environment:
        return {}
    return {BUNDLED_MODELS_VARIABLE: str(folder)}


def bundled_version(package_dir: Path) -> str:
    """``recokd.__version__`` of a ``ReCoKDTraining`` folder, read without importing it."""
    source = (Path(package_dir) / "recokd" / "__init__.py").read_text(encoding="utf-8")
    match = _VERSION.search(source)
    if not match:
        raise ValueError(f"no __version__ in {package_dir / 'recokd' / '__init__.py'}")
    return match.group(1)


def stage_training_package(package_dir: Path, destination: Path) -> Path:
    """Copy ``ReCoKDTraining`` into ``destination``, so pip builds in a writable place: an
    installed extension may be read-only."""
    staged = Path(destination) / TRAINING_FOLDER
    shutil.copytree(package_dir, staged, ignore=_NOT_COPIED)
    return staged


def pip_install_command(python: str, package_dir: Path, constraints_file: Path) -> list[str]:
    """``python -m pip install -c constraints <package_dir>[openvino]`` (an upgrade when already installed).

    The ``openvino`` extra is the fast CPU runtime ``recokd segment --backend auto`` takes; its
    requirement carries a platform marker, so pip skips OpenVINO where it has no wheels.
    """
    return [
        python, "-m", "pip", "install", "--upgrade", "--disable-pip-version-check",
        "-c", str(constraints_file), f"{package_dir}[{CPU_RUNTIME_EXTRA}]",
    ]
