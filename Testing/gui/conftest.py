"""GUI tests: the module's real widget on the real ``.ui`` file under a real Qt (PySide6,
offscreen), on a real MRML scene (``slicer-core``), with real background processes; stand-ins only
for what exists inside the Slicer application (``slicer_gui_standins.py``).

Test modules call ``pytest.importorskip`` for PySide6 and ``slicer`` first, so they skip with a
reason where a wheel is missing; nothing here imports either at load time. One ``QApplication``
serves the whole session. The bridge tests' fixtures (a real scene, a volume on an oblique grid)
are reused from ``Testing/bridge/conftest.py``, loaded under another name: every conftest module
is named ``conftest``, so one cannot import another.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
from gui_support import PANEL_STANDIN, PYSIDE6_MISSING, TESTING

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _bridge_fixtures():
    spec = importlib.util.spec_from_file_location("bridge_conftest", TESTING / "bridge" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_bridge = _bridge_fixtures()
scene = _bridge.scene
oblique_volume = _bridge.oblique_volume


@pytest.fixture(scope="session")
def qt_application():
    """The session's one ``QApplication``, offscreen unless ``QT_QPA_PLATFORM`` says otherwise."""
    QtWidgets = pytest.importorskip("PySide6.QtWidgets", reason=PYSIDE6_MISSING)
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication(["recokd-gui-tests"])


@pytest.fixture
def app(qt_application, monkeypatch, tmp_path, scene):
    """The Slicer application stand-ins (``slicer.app``), its temporary folder empty and in
    ``tmp_path``; ``slicer.mrmlScene`` is the real scene of the ``scene`` fixture."""
    from slicer_gui_standins import install

    temporary = tmp_path / "slicer-temp"
    temporary.mkdir()
    return install(monkeypatch, temporary)


@pytest.fixture
def module(app, monkeypatch):
    from slicer_app_standins import load_module

    return load_module(monkeypatch)


@pytest.fixture
def slot_errors(monkeypatch) -> list:
    """Exceptions that escaped a Qt slot of the widget (PySide6 hands them to ``sys.excepthook``).
    Slicer's ``tryWithErrorDisplay`` shows an error and raises it again: a test that expects one
    takes it out of this list."""
    errors = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, error, trace: errors.append(error))
    return errors


@pytest.fixture
def make_panel(module, monkeypatch, slot_errors):
    """``make_panel(launcher)``: the widget set up in a shown panel, its Logic starting ``launcher``
    (the real ``recokd`` of this venv when None); closed, with every run ended, after the test,
    which fails if an exception escaped a slot."""
    from panel import Panel

    panels = []

    def make(launcher: list[str] | None = None) -> Panel:
        if launcher is not None:
            monkeypatch.setattr(module.ReCoKDSegmentLogic, "launcher", staticmethod(lambda: list(launcher)))
        panels.append(Panel(module))
        return panels[-1]

    yield make
    for panel in panels:
        panel.close()
    assert not slot_errors, f"exceptions escaped the widget's slots: {slot_errors!r}"


@pytest.fixture
def panel_standin_launcher() -> list[str]:
    """Launcher for the panel's protocol stand-in (see ``recokd_panel_standin.py``)."""
    return [sys.executable, str(PANEL_STANDIN)]
