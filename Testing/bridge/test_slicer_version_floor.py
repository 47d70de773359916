"""The Slicer version floor (5.10, Python 3.10): below it the module loads and says so, and never
imports the parts of its Lib that need Python 3.10.

No Python 3.9 interpreter (Slicer 5.8's) exists here, so this is shown two ways: the files Slicer
5.8 would import first are parsed with Python 3.9's grammar, and the module is loaded with the
version check reporting Slicer 5.8 while every other Lib module refuses to import.
"""

from __future__ import annotations

import ast
import importlib.abc
import sys

import pytest
from bridge_support import REPO, SLICER_CORE_MISSING
from ReCoKDSegmentLib.compatibility import MINIMUM_SLICER, version_floor_message
from slicer_app_standins import install, load_module

MODULE_DIR = REPO / "ReCoKDSegment"
#: What Slicer imports before the version check has decided: the module script, the Lib package, the check.
FIRST_IMPORTED = [MODULE_DIR / "ReCoKDSegment.py", MODULE_DIR / "ReCoKDSegmentLib" / "__init__.py",
                  MODULE_DIR / "ReCoKDSegmentLib" / "compatibility.py"]


@pytest.mark.parametrize("path", FIRST_IMPORTED, ids=lambda path: path.name)
def test_what_slicer_imports_first_is_python_3_9_syntax(path):
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


@pytest.mark.parametrize("slicer_version, python_version, supported", [
    ((5, 8), (3, 9), False),  # Slicer 5.8.1 ships Python 3.9.10
    ((5, 10), (3, 12), True),
    ((5, 12), (3, 12), True),
    ((6, 0), (3, 13), True),
    ((5, 10), (3, 9), False),  # a custom build with an old Python
    ((4, 11), (3, 6), False),
])
def test_version_floor_message(slicer_version, python_version, supported):
    message = version_floor_message(slicer_version, python_version)
    if supported:
        assert message is None
    else:
        assert "needs Slicer 5.10 or newer (with Python 3.10 or newer)" in message
        assert f"this is Slicer {slicer_version[0]}.{slicer_version[1]}" in message


class _RefuseLibImports(importlib.abc.MetaPathFinder):
    """Refuses every ``ReCoKDSegmentLib`` module but the package and its version check, as Python
    3.9 would fail on them; records what was asked for."""

    allowed = {"ReCoKDSegmentLib", "ReCoKDSegmentLib.compatibility"}

    def __init__(self) -> None:
        self.refused: list[str] = []

    def find_spec(self, name, path=None, target=None):
        if name.startswith("ReCoKDSegmentLib.") and name not in self.allowed:
            self.refused.append(name)
            raise ImportError(f"{name} needs Python 3.10")
        return None


def test_below_the_floor_the_module_loads_says_why_and_imports_no_other_lib_module(monkeypatch, tmp_path):
    pytest.importorskip("slicer", reason=SLICER_CORE_MISSING)
    app = install(monkeypatch, tmp_path)
    monkeypatch.setattr(app, "minorVersion", 8)
    monkeypatch.setattr(app, "majorVersion", 5)
    for name in [n for n in sys.modules if n.startswith("ReCoKDSegmentLib.") and n not in _RefuseLibImports.allowed]:
        monkeypatch.delitem(sys.modules, name)
    finder = _RefuseLibImports()
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])

    module = load_module(monkeypatch)

    assert finder.refused == []  # nothing but the check was even tried
    assert module.VERSION_FLOOR_MESSAGE == version_floor_message((5, 8), sys.version_info)
    assert "needs Slicer 5.10 or newer" in module.VERSION_FLOOR_MESSAGE
    assert not hasattr(module, "ReCoKDSegmentParameterNode")
    with pytest.raises(module.ReCoKDSegmentError, match="needs Slicer 5.10 or newer"):
        module.ReCoKDSegmentLogic()


def test_at_the_floor_the_module_loads_its_lib(monkeypatch, tmp_path):
    pytest.importorskip("slicer", reason=SLICER_CORE_MISSING)
    app = install(monkeypatch, tmp_path)
    monkeypatch.setattr(app, "majorVersion", MINIMUM_SLICER[0])
    monkeypatch.setattr(app, "minorVersion", MINIMUM_SLICER[1])
    module = load_module(monkeypatch)
    assert module.VERSION_FLOOR_MESSAGE is None
    assert hasattr(module, "ReCoKDSegmentParameterNode") and module.ProcessRunner is not None
