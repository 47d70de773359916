"""The harness: the module's real widget (``ReCoKDSegmentWidget``, on the real
``ReCoKDSegment.ui``) in a module panel, built as Slicer builds it and driven as a user drives
it: choosing in combo boxes, typing, clicking, and letting Qt's event loop run (the widget polls
its background processes from a ``QTimer``). Used by the tests and by ``capture_screenshots.py``.

Waiting is always for a state, with a deadline, never for a time.
"""

from __future__ import annotations

import time
import types
from pathlib import Path

from PySide6 import QtWidgets
from slicer_gui_standins import qSlicerScriptedLoadableModuleWidget

#: The panel's size: about the width of Slicer's module panel, tall enough for every section.
PANEL_SIZE = (420, 900)


def pump(until, timeout: float = 60.0, what: str = "the panel") -> None:
    """Run Qt's event loop until ``until()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        QtWidgets.QApplication.processEvents()
        time.sleep(0.01)


class Panel:
    """``ReCoKDSegmentWidget`` set up in a shown module panel of ``PANEL_SIZE``."""

    def __init__(self, module: types.ModuleType) -> None:
        self.host = qSlicerScriptedLoadableModuleWidget()
        self.widget = module.ReCoKDSegmentWidget(self.host)
        self.widget.setup()
        self.ui = getattr(self.widget, "ui", None)  # None when setup() showed only the version floor
        self.logic = self.widget.logic
        self.host.resize(*PANEL_SIZE)
        self.host.show()
        self.host.isEntered = True
        self.widget.enter()

    def close(self) -> None:
        """What Slicer does when the application closes: the widget's ``cleanup``, then the panel goes."""
        self.widget.cleanup()
        self.host.close()
        self.host.deleteLater()
        QtWidgets.QApplication.processEvents()

    # -- what the user sees -----------------------------------------------------------------

    def runs(self) -> list:
        """The Logic's runs that are active (segmentation, distillation, models, install)."""
        runners = (self.logic.segmentRunner, self.logic.distillRunner, self.logic.modelsRunner,
                   self.logic.installRunner)
        return [runner for runner in runners if self.logic.isActive(runner)]

    @staticmethod
    def items(combo) -> list[str]:
        return [combo.itemText(index) for index in range(combo.count)]

    # -- what the user does -----------------------------------------------------------------

    def wait_idle(self, timeout: float = 60.0) -> None:
        pump(lambda: not self.runs(), timeout, "the background runs to end")

    def choose(self, combo, text: str) -> None:
        """Pick the item ``text`` from ``combo``'s list, as Qt reports a user's pick."""
        index = combo.findText(text)
        assert index >= 0, f"{text!r} is not among {self.items(combo)}"
        combo.currentIndex = index
        combo.activated.emit(index)

    @staticmethod
    def type_into(lineEdit, text: str) -> None:
        """Select what the field holds and type (or paste) ``text`` over it."""
        lineEdit.selectAll()
        lineEdit.insert(text)

    @staticmethod
    def click(button) -> None:
        """A click: nothing happens on a disabled button."""
        button.click()
        QtWidgets.QApplication.processEvents()

    @staticmethod
    def expand(section) -> None:
        section.collapsed = False
        QtWidgets.QApplication.processEvents()

    def save_screenshot(self, path: Path) -> Path:
        QtWidgets.QApplication.processEvents()
        if not self.host.grab().save(str(path)):
            raise OSError(f"could not write {path}")
        return path
