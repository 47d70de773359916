"""STAND-INS for the CTK and qMRML widget classes that ``ReCoKDSegment.ui`` names.

In Slicer these are C++ widgets from CTK and Slicer's MRML widgets library, found by the UI loader
through their designer plugins; none of them exists outside Slicer. Each stand-in here is a small
PySide6 widget (with PythonQt's attributes, see ``pythonqt.py``) that has the properties, signals
and slots the ``.ui`` file and the module use, and behaves as the real widget does for them:

- ``qMRMLWidget``: a plain widget whose ``setMRMLScene`` emits ``mrmlSceneChanged`` (the ``.ui``
  connects that signal to the node selectors' ``setMRMLScene``).
- ``qMRMLNodeComboBox``: lists the nodes of ``nodeTypes`` in the *real* MRML scene (kept up to
  date through the scene's node added / removed events), with the "none" item when
  ``noneEnabled``, and reports the chosen node (``currentNode``, ``currentNodeChanged``). Without a
  "none" item it selects the first node, as the real one does.
- ``qMRMLSegmentationShow3DButton``: a button enabled when it has a segmentation node; clicking it
  does nothing (there are no 3D views here).
- ``ctkCollapsibleButton`` / ``ctkCollapsibleGroupBox``: a group box whose contents ``collapsed``
  hides (the real one is a button-like header; the look differs, the behaviour does not).
- ``ctkPathLineEdit``: a line edit whose text is ``currentPath`` (the real one adds a history
  and a browse button). It has no ``filters``: a flag set that a Python class cannot declare as
  a Qt property, so Qt's loader warns "The set-type property filters could not be read".
"""

from __future__ import annotations

import functools

from PySide6 import QtCore, QtWidgets
from PySide6.QtCore import Property, Signal
from pythonqt import PythonQtAttributes

#: Scene events after which a node selector lists the scene's nodes again.
SCENE_EVENTS = ("NodeAddedEvent", "NodeRemovedEvent", "EndCloseEvent", "EndImportEvent")


class qMRMLWidget(PythonQtAttributes, QtWidgets.QWidget):
    """STAND-IN for qMRMLWidget: holds the scene and tells its children through a signal."""

    mrmlSceneChanged = Signal(object)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._scene = None

    def mrmlScene(self):
        return self._scene

    def setMRMLScene(self, scene) -> None:
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)


def _remove_observations(observations: list) -> None:
    for scene, tag in observations:
        scene.RemoveObserver(tag)
    observations.clear()


class qMRMLNodeComboBox(PythonQtAttributes, QtWidgets.QComboBox):
    """STAND-IN for qMRMLNodeComboBox: the scene's nodes of ``nodeTypes``, by name."""

    currentNodeChanged = Signal(object)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._node_types: list[str] = []
        self._show_child_node_types = True
        self._none_enabled = False
        self._none_display = "None"
        self._scene = None
        self._nodes: list = []  # the node of each item; None for the "none" item
        self._observations: list = []
        # Not a method of self: the widget is gone when ``destroyed`` arrives.
        self.destroyed.connect(functools.partial(_remove_observations, self._observations))
        self.currentIndexChanged.connect(lambda index: self.currentNodeChanged.emit(self.currentNode()))

    def _set_node_types(self, node_types) -> None:
        self._node_types = list(node_types)
        self._list_nodes()

    def _set_show_child_node_types(self, show: bool) -> None:
        self._show_child_node_types = bool(show)
        self._list_nodes()

    def _set_none_enabled(self, enabled: bool) -> None:
        self._none_enabled = bool(enabled)
        self._list_nodes()

    def _set_none_display(self, text: str) -> None:
        self._none_display = text
        self._list_nodes()

    nodeTypes = Property("QStringList", lambda self: self._node_types, _set_node_types)
    showChildNodeTypes = Property(bool, lambda self: self._show_child_node_types, _set_show_child_node_types)
    noneEnabled = Property(bool, lambda self: self._none_enabled, _set_none_enabled)
    noneDisplay = Property(str, lambda self: self._none_display, _set_none_display)

    def mrmlScene(self):
        return self._scene

    def setMRMLScene(self, scene) -> None:
        _remove_observations(self._observations)
        self._scene = scene
        if scene is not None:
            for event in SCENE_EVENTS:
                tag = scene.AddObserver(getattr(scene, event), lambda caller, event: self._list_nodes())
                self._observations.append((scene, tag))
        self._list_nodes()

    def currentNode(self):
        index = self.currentIndex
        return self._nodes[index] if 0 <= index < len(self._nodes) else None

    def setCurrentNode(self, node) -> None:
        self.currentIndex = self._nodes.index(node) if node in self._nodes else -1

    def _scene_nodes(self) -> list:
        if self._scene is None:
            return []
        nodes = []
        for node_type in self._node_types:
            collection = self._scene.GetNodesByClass(node_type)
            for index in range(collection.GetNumberOfItems()):
                node = collection.GetItemAsObject(index)
                if node.GetHideFromEditors() or (not self._show_child_node_types and node.GetClassName() != node_type):
                    continue
                nodes.append(node)
        return nodes

    def _list_nodes(self) -> None:
        """List the nodes again, keeping the current one while it is in the scene."""
        current = self.currentNode()
        nodes = [None] * self._none_enabled + self._scene_nodes()
        chosen = current if current in nodes else (None if self._none_enabled or not nodes else nodes[0])
        was_blocked = self.blockSignals(True)
        self.clear()
        self._nodes = nodes
        for node in nodes:
            self.addItem(self._none_display if node is None else node.GetName())
        self.currentIndex = nodes.index(chosen) if chosen in nodes else -1
        self.blockSignals(was_blocked)
        if chosen is not current:
            self.currentNodeChanged.emit(chosen)


class qMRMLSegmentationShow3DButton(PythonQtAttributes, QtWidgets.QPushButton):
    """STAND-IN for qMRMLSegmentationShow3DButton: enabled while it has a segmentation node."""

    def __init__(self, parent=None) -> None:
        super().__init__("Show 3D", parent)
        self._segmentation_node = None
        self.enabled = False

    def segmentationNode(self):
        return self._segmentation_node

    def setSegmentationNode(self, node) -> None:
        self._segmentation_node = node
        self.enabled = node is not None


class ctkCollapsibleGroupBox(PythonQtAttributes, QtWidgets.QGroupBox):
    """STAND-IN for ctkCollapsibleGroupBox: ``collapsed`` hides the contents, and showing them
    again leaves hidden what the module hid itself."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._collapsed = False
        self._hidden_by_collapse: list[QtWidgets.QWidget] = []

    def _set_collapsed(self, collapsed: bool) -> None:
        self._collapsed = bool(collapsed)
        self._apply_collapsed()

    collapsed = Property(bool, lambda self: self._collapsed, _set_collapsed)

    def _apply_collapsed(self) -> None:
        if not self._collapsed:
            for child in self._hidden_by_collapse:
                child.show()
            self._hidden_by_collapse.clear()
            return
        for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindChildOption.FindDirectChildrenOnly):
            if not child.isHidden():
                child.hide()
                self._hidden_by_collapse.append(child)

    def showEvent(self, event) -> None:
        """The contents exist only after the loader set ``collapsed``: collapse them when shown."""
        self._apply_collapsed()
        super().showEvent(event)


class ctkCollapsibleButton(ctkCollapsibleGroupBox):
    """STAND-IN for ctkCollapsibleButton: a collapsible section whose ``text`` is its title."""

    text = Property(str, lambda self: self.title, lambda self, text: self.setTitle(text))


class ctkPathLineEdit(PythonQtAttributes, QtWidgets.QLineEdit):
    """STAND-IN for ctkPathLineEdit: the typed text is ``currentPath``."""

    currentPathChanged = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.textChanged.connect(self.currentPathChanged)

    currentPath = Property(str, lambda self: self.text, lambda self, path: self.setText(path))


#: The stand-ins by the class name a ``.ui`` file gives.
DESIGNER_CLASSES = {cls.__name__: cls for cls in (
    qMRMLWidget, qMRMLNodeComboBox, qMRMLSegmentationShow3DButton, ctkCollapsibleGroupBox, ctkCollapsibleButton,
    ctkPathLineEdit)}
