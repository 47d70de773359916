"""Stand-ins for the parts of Slicer that exist only inside the Slicer application, so that
``ReCoKDSegment/ReCoKDSegment.py`` imports and its Logic runs under pytest.

What is a stand-in, and why (the Slicer application, and with it the Qt GUI, cannot exist here):

- ``qt``: an empty module. Only the widget uses Qt, and the widget is not run here.
- ``slicer.i18n``: ``tr`` and ``translate`` return the text unchanged (no translations are loaded).
- ``slicer.parameterNodeWrapper``: ``parameterNodeWrapper`` leaves the class as written (its
  annotations and defaults); ``Choice`` and ``WithinRange`` are ``Annotated`` markers that only
  keep their arguments (nothing validates here). The real wrapper binds the class to a parameter
  node of the scene, which only the widget asks for; :func:`parameter_values` stands in for the
  values of one such node (``Testing/gui`` has a wrapper bound to a real node, for the widget).
- ``slicer.ScriptedLoadableModule``: empty base classes (the real ones reach ``slicer.app``,
  ``slicer.modules`` and Qt). The module's own classes, the Logic included, are unchanged.
- ``slicer.app``: ``majorVersion`` and ``minorVersion`` (the ``slicer-core`` wheel's),
  ``temporaryPath`` (a test folder), ``processEvents`` (does nothing: there is no event loop and
  no window to paint) and ``commandOptions().testingEnabled`` (False, so the Logic asks its
  questions as it would ask a user).
- ``slicer.util.confirmOkCancelDisplay`` (a Qt message box): records the question and returns the
  answer the test chose (:class:`Dialogs`).

Everything else is real: the ``slicer`` package of the ``slicer-core`` wheel (MRML classes and the
rest of ``slicer.util``), the scene (``slicer.mrmlScene``, set by the ``scene`` fixture),
``ReCoKDSegmentLib``, and the ``recokd`` processes the Logic starts.

Nothing here touches ``sys.modules`` or ``slicer`` when imported: :func:`install` and
:func:`load_module` do, through a test's ``monkeypatch``, which undoes it after the test.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import typing
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

MODULE_SCRIPT = Path(__file__).resolve().parents[2] / "ReCoKDSegment" / "ReCoKDSegment.py"


@dataclass
class Dialogs:
    """The questions the module asked the user (window title, text) and the answer each gets.
    The default answer is "Cancel": a question nobody expected then cannot start an install."""

    answer: bool = False
    questions: list[tuple[str | None, str]] = field(default_factory=list)

    def confirmOkCancelDisplay(self, text, windowTitle=None, parent=None, **kwargs) -> bool:
        self.questions.append((windowTitle, text))
        return self.answer


class SlicerApp:
    """``slicer.app``: only what the module reads. Its version is the ``slicer-core`` wheel's."""

    def __init__(self, temporary_path: Path) -> None:
        self.temporaryPath = str(temporary_path)
        self.dialogs = Dialogs()
        self.majorVersion, self.minorVersion = (int(part) for part in version("slicer-core").split(".")[:2])

    @staticmethod
    def commandOptions() -> types.SimpleNamespace:
        return types.SimpleNamespace(testingEnabled=False)

    def processEvents(self) -> None:
        """No event loop exists here: nothing to process."""


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name, "Stand-in for a Slicer application module: see slicer_app_standins.py")
    module.__dict__.update(attributes)
    return module


@dataclass(frozen=True)
class Choice:
    """``Annotated[str, Choice(values)]``: the values a parameter may take."""

    choices: tuple


@dataclass(frozen=True)
class WithinRange:
    """``Annotated[int, WithinRange(minimum, maximum)]``: the range a number may take."""

    minimum: float
    maximum: float


def _base_class(name: str) -> type:
    return type(name, (), {"__doc__": "Stand-in base class (the real one needs the Slicer application)."})


def install(monkeypatch, temporary_path: Path) -> SlicerApp:
    """Put every stand-in in place for one test; returns the ``slicer.app`` stand-in."""
    import slicer
    import slicer.util

    app = SlicerApp(temporary_path)
    monkeypatch.setitem(sys.modules, "qt", _module("qt"))
    monkeypatch.setitem(sys.modules, "slicer.i18n", _module(
        "slicer.i18n", tr=lambda text: text, translate=lambda context, text: text))
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", _module(
        "slicer.parameterNodeWrapper", parameterNodeWrapper=lambda cls: cls, Choice=Choice, WithinRange=WithinRange))
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", _module(
        "slicer.ScriptedLoadableModule", **{name: _base_class(name) for name in (
            "ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest",
            "ScriptedLoadableModuleWidget")}))
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", app.dialogs.confirmOkCancelDisplay)
    return app


def load_module(monkeypatch) -> types.ModuleType:
    """Import ``ReCoKDSegment.py`` as the module ``ReCoKDSegment`` (as Slicer does); it leaves
    ``sys.modules`` after the test. Call :func:`install` first."""
    spec = importlib.util.spec_from_file_location("ReCoKDSegment", MODULE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "ReCoKDSegment", module)
    spec.loader.exec_module(module)
    return module


def parameter_type(annotation) -> type:
    """The type of a parameter annotated ``T`` or ``Annotated[T, ...]``."""
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation


def parameter_defaults(parameter_class: type) -> dict:
    """Each parameter's default: the class's value, else the real wrapper's (its type's default,
    e.g. ``Path()``; None for a node: Slicer's ``parameterNodeWrapper/serializers.py``)."""
    defaults = {}
    for name, annotation in parameter_class.__annotations__.items():
        base = parameter_type(annotation)
        defaults[name] = getattr(parameter_class, name, base() if base in (str, int, float, bool, Path) else None)
    return defaults


def parameter_values(parameter_class: type, **values) -> types.SimpleNamespace:
    """The values of one parameter node of ``parameter_class``: ``values`` over its defaults. An
    unknown name raises, as setting it on the real wrapper would."""
    fields = parameter_defaults(parameter_class)
    unknown = set(values) - set(fields)
    if unknown:
        raise AttributeError(f"{parameter_class.__name__} has no parameter {', '.join(sorted(unknown))}")
    return types.SimpleNamespace(**(fields | values))
