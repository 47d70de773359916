"""STAND-IN for Slicer's ``parameterNodeWrapper`` (``slicer/parameterNodeWrapper``), for the widget.

The real decorator turns a class of annotated parameters into a wrapper of a
``vtkMRMLScriptedModuleNode``: values live in the node (nodes as node references, the rest as
text parameters), setting one modifies the node, and ``connectGui`` binds every widget whose
``SlicerParameterName`` property names a parameter to it, both ways. It needs Slicer's Python
packages beyond ``slicer-core``; this stand-in does the same on the *real* MRML node of the scene
for the parameter types and widgets ``ReCoKDSegment`` uses (str, int, float, bool, Path, MRML
nodes; combo boxes with ``Choice``, spin boxes with ``WithinRange``, check boxes, line edits,
path line edits, node selectors). Defaults and markers are the bridge stand-ins'
(``slicer_app_standins.py``).
"""

from __future__ import annotations

import itertools
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import slicer
import vtk
from designer_standins import ctkPathLineEdit, qMRMLNodeComboBox
from PySide6 import QtWidgets
from slicer_app_standins import Choice, WithinRange, parameter_defaults, parameter_type


def _is_node_type(cls) -> bool:
    return isinstance(cls, type) and issubclass(cls, slicer.vtkMRMLNode)


def _from_text(cls: type, text: str):
    return text == "True" if cls is bool else cls(text)


@dataclass(frozen=True)
class GuiConnector:
    """How one kind of widget shows a parameter: the signal it changes by, how to read and write
    its value, and how a marker (``Choice``, ``WithinRange``) sets it up."""

    signal: str
    read: Callable
    write: Callable
    prepare: Callable = lambda widget, marker: None


def _prepare_combo(widget, marker) -> None:
    if isinstance(marker, Choice):
        widget.clear()  # connected again each time the module is entered
        for choice in marker.choices:
            widget.addItem(str(choice), choice)


def _prepare_spin_box(widget, marker) -> None:
    if isinstance(marker, WithinRange):
        widget.setRange(marker.minimum, marker.maximum)


def _write_combo(widget, value) -> None:
    widget.setProperty("currentIndex", widget.findData(value))


def _property(name: str, convert: Callable = lambda value: value) -> dict:
    """Read and write a widget's value as its Qt property ``name`` (written as text by ``convert``)."""
    return {"read": lambda widget: widget.property(name),
            "write": lambda widget, value: widget.setProperty(name, convert(value))}


#: Connectors by widget class, the most derived first (a node selector is a QComboBox too).
CONNECTORS = (
    (qMRMLNodeComboBox, GuiConnector("currentNodeChanged", lambda widget: widget.currentNode(),
                                     lambda widget, node: widget.setCurrentNode(node))),
    (ctkPathLineEdit, GuiConnector("currentPathChanged", lambda widget: Path(widget.property("currentPath")),
                                   _property("currentPath", str)["write"])),
    (QtWidgets.QComboBox, GuiConnector("currentIndexChanged", _property("currentData")["read"], _write_combo,
                                       _prepare_combo)),
    (QtWidgets.QCheckBox, GuiConnector("toggled", **_property("checked"))),
    (QtWidgets.QDoubleSpinBox, GuiConnector("valueChanged", **_property("value"), prepare=_prepare_spin_box)),
    (QtWidgets.QSpinBox, GuiConnector("valueChanged", **_property("value"), prepare=_prepare_spin_box)),
    (QtWidgets.QLineEdit, GuiConnector("textChanged", **_property("text"))),
)


def connector_for(widget) -> GuiConnector:
    for cls, connector in CONNECTORS:
        if isinstance(widget, cls):
            return connector
    raise TypeError(f"no GUI connector for {type(widget).__name__} (the parameter node stand-in lacks it)")


class ParameterNodeWrapper:
    """Base of the wrapped classes: parameters read from and written to ``parameterNode``."""

    _defaults: dict = {}
    _annotations: dict = {}
    _tags = itertools.count(1)

    def __init__(self, parameterNode) -> None:
        object.__setattr__(self, "parameterNode", parameterNode)
        object.__setattr__(self, "_gui", {})
        names = set(parameterNode.GetParameterNames())
        for name, default in self._defaults.items():
            if not self._is_node(name) and name not in names:
                parameterNode.SetParameter(name, str(default))

    @classmethod
    def _is_node(cls, name: str) -> bool:
        return _is_node_type(parameter_type(cls._annotations[name]))

    def _check(self, name: str) -> None:
        if name not in self._defaults:
            raise AttributeError(f"{type(self).__name__} has no parameter {name}")

    def __getattr__(self, name: str):
        self._check(name)
        if self._is_node(name):
            return self.parameterNode.GetNodeReference(name)
        return _from_text(parameter_type(self._annotations[name]), self.parameterNode.GetParameter(name))

    def __setattr__(self, name: str, value) -> None:
        self._check(name)
        if self._is_node(name):
            self.parameterNode.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        else:
            self.parameterNode.SetParameter(name, str(value))  # modifies the node only on a change

    def AddObserver(self, event, callback, priority: float = 0.0) -> int:
        return self.parameterNode.AddObserver(event, callback, priority)

    def RemoveObserver(self, tag: int) -> None:
        self.parameterNode.RemoveObserver(tag)

    def connectGui(self, widgets) -> int:
        """Bind the widgets among ``widgets``' attributes that name a parameter; returns a tag."""
        bindings = []
        for widget in vars(widgets).values():
            name = widget.property("SlicerParameterName") if isinstance(widget, QtWidgets.QWidget) else None
            if not name:
                continue
            self._check(name)
            connector = connector_for(widget)
            for marker in typing.get_args(self._annotations[name])[1:]:
                connector.prepare(widget, marker)

            def fromWidget(*arguments, name=name, widget=widget, connector=connector):
                setattr(self, name, connector.read(widget))

            getattr(widget, connector.signal).connect(fromWidget)
            bindings.append((name, widget, connector, fromWidget))

        def toWidgets(caller=None, event=None):
            for name, widget, connector, _slot in bindings:
                value = getattr(self, name)
                if connector.read(widget) != value:  # a widget being typed into keeps its cursor
                    wasBlocked = widget.blockSignals(True)
                    connector.write(widget, value)
                    widget.blockSignals(wasBlocked)

        toWidgets()
        tag = next(self._tags)
        self._gui[tag] = (bindings, self.AddObserver(vtk.vtkCommand.ModifiedEvent, toWidgets))
        return tag

    def disconnectGui(self, tag: int) -> None:
        bindings, observer = self._gui.pop(tag)
        self.RemoveObserver(observer)
        for _name, widget, connector, slot in bindings:
            getattr(widget, connector.signal).disconnect(slot)


def parameterNodeWrapper(cls: type) -> type:
    """The decorator: a wrapper class with ``cls``'s parameters, name and docstring."""
    return type(cls.__name__, (ParameterNodeWrapper,), {
        "__doc__": cls.__doc__, "__module__": cls.__module__,
        "_defaults": parameter_defaults(cls), "_annotations": dict(cls.__annotations__)})
