"""What the GUI tests share before they know that PySide6 exists (``panel.py`` needs it).

Importing this module makes the bridge tests' helpers (``Testing/bridge``) and the core tests'
tiny model package (``Testing/core``) importable.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTING = Path(__file__).resolve().parents[1]
for folder in (TESTING / "bridge", TESTING / "core"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

PYSIDE6_MISSING = "needs PySide6 (a real Qt; the test extra installs PySide6-Essentials on Linux x86_64)"
#: The panel's protocol stand-in for ``recokd`` (see ``recokd_panel_standin.py``).
PANEL_STANDIN = Path(__file__).with_name("recokd_panel_standin.py")
