"""STAND-IN for PythonQt, the Qt binding of Slicer's Python, built on PySide6 (a real Qt).

``ReCoKDSegment.py`` is written for PythonQt, which cannot be installed outside Slicer. PySide6
wraps the same Qt classes but spells a few things differently; this module gives PySide6 objects
PythonQt's spelling for what the module uses, and nothing else:

- Qt properties are attributes (``button.text = "Cancel"``, ``widget.enabled = False``,
  ``progressBar.value = 3``, ``combo.currentIndex = 0``, ``combo.count``, ``widget.name`` for the
  object name); PySide6 has getter and setter methods. :class:`PythonQtAttributes` reads and
  writes them through Qt's property system.
- Signals connect by their C++ signature, ``obj.connect("clicked(bool)", slot)``; PySide6 writes
  ``obj.clicked.connect(slot)``.
- One ``qt`` module holds QtCore, QtGui, QtWidgets and QtUiTools (:func:`qt_module`); its QObject
  classes are PythonQt-style subclasses (:func:`pythonqt_class`).

Everything else is PySide6's own Qt: widgets, layouts, the event loop, painting, ``QUiLoader``.
"""

from __future__ import annotations

import functools
import types

from PySide6 import QtCore, QtGui, QtUiTools, QtWidgets

QT_MODULES = (QtWidgets, QtGui, QtCore, QtUiTools)


@functools.cache
def qt_property_names(cls: type) -> frozenset[str]:
    """The Qt property names of ``cls`` (its C++ classes' and those it declares with ``Property``)."""
    meta = cls.staticMetaObject
    return frozenset(meta.property(index).name() for index in range(meta.propertyCount()))


class PythonQtAttributes:
    """Mixin for a QObject class: Qt properties read and written as attributes, and ``connect``
    by signature, as in PythonQt.

    A property whose getter has its name (``text``, ``count``, ``objectName``) reads as the
    value, not the method. The getter is the PySide6 method of the C++ class, which calls the C++
    implementation directly; so a C++ virtual getter (``QProgressBar::text``) that Qt calls while
    painting finds a value, not a Python override, and does not recurse.
    """

    def __getattribute__(self, name: str):
        if name == "connect":  # PySide6 finds its own QObject.connect before a subclass's method
            return functools.partial(connect, self)
        value = super().__getattribute__(name)
        if isinstance(value, types.BuiltinMethodType) and name in qt_property_names(type(self)):
            return value()
        return value

    def __getattr__(self, name: str):
        """A property without a getter of its name (``enabled``, ``visible``); ``name`` is PythonQt's
        alias of ``objectName``."""
        if name == "name":
            return self.objectName
        if name in qt_property_names(type(self)):
            return self.property(name)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __setattr__(self, name: str, value) -> None:
        if name in qt_property_names(type(self)):
            if not self.setProperty(name, value):
                raise AttributeError(f"Qt property '{name}' of {type(self).__name__} did not take {value!r}")
        else:
            super().__setattr__(name, value)


def connect(sender: QtCore.QObject, signature: str, slot) -> None:
    """PythonQt's ``sender.connect("activated(int)", slot)``: the signal named before the parenthesis."""
    getattr(sender, signature.split("(", 1)[0]).connect(slot)


@functools.cache
def pythonqt_class(qt_class: type) -> type:
    """``qt_class`` with PythonQt's attributes; the subclass keeps the Qt class's name."""
    return type(qt_class.__name__, (PythonQtAttributes, qt_class), {"__module__": __name__})


def qt_module(**replacements) -> types.ModuleType:
    """PythonQt's ``qt`` module: every name of QtWidgets, QtGui, QtCore and QtUiTools, QObject
    classes in their PythonQt-style form; ``replacements`` take the place of some names (the
    ``QUiLoader`` that knows Slicer's designer classes)."""

    def lookup(name: str):
        if name in replacements:
            return replacements[name]
        for module in QT_MODULES:
            if hasattr(module, name):
                value = getattr(module, name)
                is_qobject_class = isinstance(value, type) and issubclass(value, QtCore.QObject)
                return pythonqt_class(value) if is_qobject_class else value
        raise AttributeError(f"module 'qt' has no attribute '{name}'")

    module = types.ModuleType("qt", "Stand-in for PythonQt's qt module: see Testing/gui/pythonqt.py")
    module.__getattr__ = lookup
    return module
