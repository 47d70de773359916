"""The Slicer and Python versions the module runs on, checked before anything that needs them loads.

``recokd`` requires Python 3.10 or newer (its ``python_requires``), and the rest of this Lib
evaluates ``X | Y`` unions at import, which Python 3.9 cannot. Slicer 5.8 ships Python 3.9.10; Slicer 5.10 and 5.12 ship
Python 3.12. So the floor is Slicer 5.10. ``ReCoKDSegment.py`` imports this module first and,
below the floor, shows :func:`version_floor_message` in its panel instead of importing the
rest (which would end in a traceback). This file must therefore itself import and run on
Python 3.9: ``Testing/bridge/test_slicer_version_floor.py`` parses it with
``feature_version=(3, 9)``.
"""

from __future__ import annotations

MINIMUM_SLICER = (5, 10)
MINIMUM_PYTHON = (3, 10)


def version_floor_message(slicer_version: tuple, python_version: tuple) -> str | None:
    """Why this Slicer cannot run the module, for its panel; ``None`` when it can.

    ``slicer_version`` is ``(major, minor)`` of the running Slicer, ``python_version`` is
    ``sys.version_info[:2]`` of its Python.
    """
    slicer_version, python_version = tuple(slicer_version[:2]), tuple(python_version[:2])
    if slicer_version >= MINIMUM_SLICER and python_version >= MINIMUM_PYTHON:
        return None
    return (
        f"ReCoKD Segment needs Slicer {_dotted(MINIMUM_SLICER)} or newer (with Python {_dotted(MINIMUM_PYTHON)} or newer); "
        f"this is Slicer {_dotted(slicer_version)} with Python {_dotted(python_version)}. Install a current Slicer release from "
        "https://download.slicer.org and add the ReCoKD extension there."
    )


def _dotted(version: tuple) -> str:
    return ".".join(str(part) for part in version)
