"""The ``recokd`` command line and the package's independence from Slicer."""

from __future__ import annotations

import subprocess
import sys

from recokd import __version__
from recokd.cli import COMMAND_MODULES, build_parser


def _recokd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recokd", *args], capture_output=True, text=True, timeout=120)


def test_version_prints_the_package_version():
    result = _recokd("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"recokd {__version__}"


def test_help_lists_every_command():
    result = _recokd("--help")
    assert result.returncode == 0
    for command in ("phantom", "prepare", "train-teacher", "distill", "export", "models", "segment", "benchmark", "demo"):
        assert command in result.stdout


def test_every_listed_command_module_registers_a_parser():
    choices = build_parser()._subparsers._group_actions[0].choices
    assert len(choices) == len(COMMAND_MODULES)


def test_no_command_prints_help_and_fails():
    assert _recokd().returncode == 1


def test_recokd_imports_without_slicer_or_qt():
    code = (
        "import importlib, pkgutil, sys, recokd\n"
        "for m in pkgutil.walk_packages(recokd.__path__, 'recokd.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('slicer', 'qt', 'PyQt5', 'PySide2', 'PySide6', 'vtk'))\n"
        "print(bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
