"""Slicer's "Reload" while a segmentation runs: the widget stops its runs before it reloads the Lib.

Reloading first would leave a running ``ProcessRunner`` comparing its state with a new
``RunnerState`` enum: cancelling it then does nothing, and its process and temporary folder
outlive the widget. Run in a process of its own (``reload_during_run.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bridge_support import SLICER_CORE_MISSING

pytest.importorskip("slicer", reason=SLICER_CORE_MISSING)


def test_reload_during_a_run_stops_the_process_then_reloads_the_lib(tmp_path):
    script = Path(__file__).with_name("reload_during_run.py")
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                            timeout=120, cwd=script.parent)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"state_when_the_lib_was_reloaded": "IDLE", "state_after": "IDLE", "cancelled": True,
                      "process_alive": False, "work_dir_exists": False, "runner_module_reloaded": True}
