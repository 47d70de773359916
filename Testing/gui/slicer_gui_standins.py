"""Stand-ins for the Slicer application's GUI side, on a real Qt (PySide6), so that the module's
real widget (``ReCoKDSegmentWidget``) runs on the real ``ReCoKDSegment.ui``.

:func:`install` puts the bridge tests' stand-ins in place (``Testing/bridge/slicer_app_standins.py``:
translations, ``slicer.app``'s temporary folder, the install question) and then replaces what the
widget needs beyond them. What is a stand-in, and why (the Slicer application and its PythonQt
cannot be installed here):

- ``qt``: PythonQt's module, as PySide6 classes with PythonQt's attributes and ``connect``
  (``pythonqt.py``); its ``QUiLoader`` creates the CTK and qMRML stand-ins (``ui_loader.py``,
  ``designer_standins.py``), which are also ``ctk.ctk...`` and ``slicer.qMRML...`` as in Slicer.
  ``qt.QFileDialog.getOpenFileName`` returns the file the test chose (a modal dialog would wait
  for a click that never comes).
- ``slicer.app``: the bridge's, plus what the widget reads of the application: the event loop
  (``processEvents``), the wait cursor and the top-level widgets (Qt's), ``testingEnabled()``
  (False, so errors are shown as to a user).
- ``slicer.util.errorDisplay`` (a Qt message box): records the message (:class:`GuiDialogs`).
  Slicer's own ``tryWithErrorDisplay``, ``loadUI``, ``childWidgetVariables`` and ``mainWindow``
  (from the ``slicer-core`` wheel) run unchanged on top of these.
- ``slicer.parameterNodeWrapper``: a wrapper bound to the scene's real parameter node, with
  ``connectGui`` (``parameter_node_standin.py``).
- ``slicer.ScriptedLoadableModule``: ``ScriptedLoadableModuleWidget`` takes the module panel
  Slicer gives it (:class:`qSlicerScriptedLoadableModuleWidget`) and finds ``Resources/`` next to
  the module script; ``ScriptedLoadableModuleLogic.getParameterNode`` is Slicer's: the scene's
  singleton ``vtkMRMLScriptedModuleNode`` of the module, created on first use.

Everything else is real: the MRML classes and scene (``slicer-core``), the module, its Lib, the
background processes, and Qt itself (widgets, layouts, timers, the event loop, painting).
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import parameter_node_standin
import slicer
import slicer.util
from designer_standins import DESIGNER_CLASSES
from PySide6 import QtWidgets
from PySide6.QtCore import Property
from pythonqt import PythonQtAttributes, qt_module
from slicer_app_standins import Dialogs, SlicerApp
from slicer_app_standins import install as install_bridge_standins
from ui_loader import SlicerUiLoader


@dataclass
class GuiDialogs(Dialogs):
    """The bridge's questions, plus the error messages shown and the file the user picks in a
    file dialog (None: the dialog is cancelled)."""

    errors: list[str] = field(default_factory=list)
    chosen_file: str | None = None

    def errorDisplay(self, text, windowTitle=None, parent=None, standardButtons=None, **kwargs) -> None:
        self.errors.append(text)


class SlicerGuiApp(SlicerApp):
    """``slicer.app`` with Qt's event loop, cursor and windows."""

    def __init__(self, temporary_path: Path) -> None:
        super().__init__(temporary_path)
        self.dialogs = GuiDialogs()

    def processEvents(self) -> None:
        QtWidgets.QApplication.processEvents()

    @staticmethod
    def testingEnabled() -> bool:
        return False

    @staticmethod
    def setOverrideCursor(cursor) -> None:
        QtWidgets.QApplication.setOverrideCursor(cursor)

    @staticmethod
    def restoreOverrideCursor() -> None:
        QtWidgets.QApplication.restoreOverrideCursor()

    @staticmethod
    def topLevelWidgets() -> list:
        return QtWidgets.QApplication.topLevelWidgets()


class qSlicerScriptedLoadableModuleWidget(PythonQtAttributes, QtWidgets.QWidget):
    """STAND-IN for the panel Slicer gives a scripted module's widget: a widget with a vertical
    layout and ``isEntered`` (True while the module is shown)."""

    def __init__(self) -> None:
        super().__init__()
        self._entered = False
        self.setLayout(QtWidgets.QVBoxLayout())

    def _set_entered(self, entered: bool) -> None:
        self._entered = bool(entered)

    isEntered = Property(bool, lambda self: self._entered, _set_entered)


class ScriptedLoadableModuleWidget:
    """STAND-IN for Slicer's base class of a module widget, given its panel (``parent``)."""

    def __init__(self, parent) -> None:
        self.moduleName = type(self).__name__.removesuffix("Widget")
        self.parent = parent
        self.layout = parent.layout()

    def setup(self) -> None:
        """Slicer's adds the "Reload & Test" section in developer mode only: nothing here."""

    def resourcePath(self, filename: str) -> str:
        return str(Path(sys.modules[type(self).__module__].__file__).parent / "Resources" / filename)


class ScriptedLoadableModuleLogic:
    """STAND-IN for Slicer's base class of a module logic: its parameter node, as Slicer's."""

    def __init__(self) -> None:
        self.moduleName = type(self).__name__.removesuffix("Logic")

    def getParameterNode(self):
        scene = slicer.mrmlScene
        node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(self.moduleName)
            node.SetName(scene.GenerateUniqueName(self.moduleName))
            node.SetAttribute("ModuleName", self.moduleName)
            node = scene.AddNode(node)
        return node


class QFileDialog(QtWidgets.QFileDialog):
    """STAND-IN for ``qt.QFileDialog``'s static dialogs: the file the test chose."""

    dialogs: GuiDialogs

    @classmethod
    def getOpenFileName(cls, parent=None, caption="", directory="", filter="") -> str:
        return cls.dialogs.chosen_file or ""


def install(monkeypatch, temporary_path: Path) -> SlicerGuiApp:
    """Put every stand-in in place for one test (undone with ``monkeypatch``); returns ``slicer.app``."""
    install_bridge_standins(monkeypatch, temporary_path)
    app = SlicerGuiApp(temporary_path)
    file_dialog = type("QFileDialog", (QFileDialog,), {"dialogs": app.dialogs})
    monkeypatch.setitem(sys.modules, "qt", qt_module(QUiLoader=SlicerUiLoader, QFileDialog=file_dialog))
    ctk = types.ModuleType("ctk", "Stand-ins for CTK's widgets: see Testing/gui/designer_standins.py")
    monkeypatch.setitem(sys.modules, "ctk", ctk)
    for name, cls in DESIGNER_CLASSES.items():
        monkeypatch.setattr(ctk if name.startswith("ctk") else slicer, name, cls, raising=False)
    monkeypatch.setattr(sys.modules["slicer.parameterNodeWrapper"], "parameterNodeWrapper",
                        parameter_node_standin.parameterNodeWrapper)
    for base in (ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic):
        monkeypatch.setattr(sys.modules["slicer.ScriptedLoadableModule"], base.__name__, base)
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", app.dialogs.confirmOkCancelDisplay)
    monkeypatch.setattr(slicer.util, "errorDisplay", app.dialogs.errorDisplay)
    return app
