"""STAND-IN for ``qt.QUiLoader`` as Slicer's PythonQt provides it: Qt's own ``QUiLoader``
(PySide6's), which here creates the designer stand-ins for CTK and qMRML classes and PythonQt-style
Qt widgets, so that Slicer's real ``slicer.util.loadUI`` and ``childWidgetVariables`` load
``ReCoKDSegment.ui`` unchanged.

One difference to Qt's loader: the ``.ui`` file's ``<connections>`` are made here, by signal and
slot name, after loading. Qt's loader matches C++ signatures, and a stand-in's Python signal has
no ``vtkMRMLScene*`` argument type to match ``mrmlSceneChanged(vtkMRMLScene*)``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from designer_standins import DESIGNER_CLASSES
from PySide6 import QtCore, QtUiTools, QtWidgets
from pythonqt import pythonqt_class


def _name(signature: str) -> str:
    return signature.split("(", 1)[0]


class SlicerUiLoader(QtUiTools.QUiLoader):
    """``QUiLoader`` that knows Slicer's designer classes (through their stand-ins)."""

    def createWidget(self, className: str, parent=None, name: str = ""):
        cls = DESIGNER_CLASSES.get(className) or pythonqt_class(getattr(QtWidgets, className))
        widget = cls(parent)
        widget.setObjectName(name)
        return widget

    def load(self, device: QtCore.QIODevice, parentWidget=None):
        """Load the ``.ui`` text of ``device`` (an open file), then make its connections."""
        document = ElementTree.fromstring(bytes(device.readAll()))
        connections = document.find("connections")
        if connections is not None:
            document.remove(connections)
        buffer = QtCore.QBuffer()
        buffer.setData(ElementTree.tostring(document))
        buffer.open(QtCore.QIODevice.OpenModeFlag.ReadOnly)
        widget = super().load(buffer, parentWidget)
        if widget is not None and connections is not None:
            for connection in connections.iter("connection"):
                sender, receiver = (self._find(widget, connection.findtext(role)) for role in ("sender", "receiver"))
                signal = getattr(sender, _name(connection.findtext("signal")))
                signal.connect(getattr(receiver, _name(connection.findtext("slot"))))
        return widget

    @staticmethod
    def _find(root: QtWidgets.QWidget, name: str) -> QtCore.QObject:
        found = root if root.property("objectName") == name else root.findChild(QtCore.QObject, name)
        if found is None:
            raise RuntimeError(f"the .ui file connects '{name}', which it does not create")
        return found
