"""Run by ``test_slicer_widget_reload.py`` in a process of its own: "Reload" of the module while a
segmentation runs, reported as one JSON line.

A process of its own because a reload re-executes the Lib modules in place: the classes that
other tests imported would no longer be the ones the Lib uses.

Usage: ``python reload_during_run.py TEMP_DIR``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import bridge_support  # noqa: F401  (puts ReCoKDSegmentLib on the path)
import numpy as np
import pytest
import slicer
import vtk
from slicer_app_standins import install, load_module
from vtk.util import numpy_support

ENDLESS = ("import json, time\n"
           "while True:\n"
           "    print(json.dumps({'event': 'progress', 'stage': 'predicting', 'fraction': 0.5}), flush=True)\n"
           "    time.sleep(0.1)\n")


def volume_node(scene):
    image = vtk.vtkImageData()
    image.SetDimensions(4, 4, 4)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.zeros(64, dtype=np.int16), deep=True))
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetAndObserveImageData(image)
    scene.AddNode(node)
    return node


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(temp_dir: Path) -> dict:
    monkeypatch = pytest.MonkeyPatch()
    slicer.mrmlScene = slicer.vtkMRMLScene()
    install(monkeypatch, temp_dir)
    module = load_module(monkeypatch)
    from ReCoKDSegmentLib.jobs import SegmentVolumeJob
    from ReCoKDSegmentLib.runner import RunnerState

    logic = module.ReCoKDSegmentLogic()
    job = SegmentVolumeJob([sys.executable, "-c", ENDLESS], slicer.mrmlScene, volume_node(slicer.mrmlScene),
                           "any-model", temp_root=temp_dir)
    runner = logic._newRunner()
    runner.start([job.prepare()], on_finished=[job.cleanup])
    logic.segmentRunner = runner
    pid = runner._process.pid  # white box: the process that must not outlive the reload

    seen = {}

    def base_on_reload(widget) -> None:  # Slicer's: re-import the module script, make a new widget
        seen["state_when_the_lib_was_reloaded"] = runner.state.name

    monkeypatch.setattr(module.ScriptedLoadableModuleWidget, "onReload", base_on_reload, raising=False)
    widget = module.ReCoKDSegmentWidget.__new__(module.ReCoKDSegmentWidget)  # no Qt here: only what onReload uses
    widget.logic = logic
    original_enum = RunnerState
    widget.onReload()
    return {
        **seen,
        "state_after": runner.state.name,
        "cancelled": runner.cancelled,
        "process_alive": alive(pid),
        "work_dir_exists": job.work_dir.exists(),
        "runner_module_reloaded": sys.modules["ReCoKDSegmentLib.runner"].RunnerState is not original_enum,
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
