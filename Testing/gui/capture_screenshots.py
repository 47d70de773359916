"""Screenshots of the Slicer panel, taken with the GUI tests' harness (``panel.py``) and fixtures:

    .venv/bin/python Testing/gui/capture_screenshots.py

writes ``Resources/Screenshots/ReCoKDSegment.png`` (a volume and a model chosen),
``ReCoKDSegment-segmenting.png`` (progress), ``ReCoKDSegment-done.png`` (the result) and
``ReCoKDSegment-distilling.png``. The segmentation is real: this venv's ``recokd`` with the bundled
phantom teacher (``Resources/Models``) on a generated phantom CT. The distillation is the panel's
protocol stand-in (a real one needs a trained teacher's results folder and hours). Not a test:
pytest collects only ``test_*.py``, and the test run must not write into the repository.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
from gui_support import TESTING

REPO = TESTING.parent
SCREENSHOTS = REPO / "Resources" / "Screenshots"
MODEL = "phantom-teacher"


def phantom_volume(scene, folder: Path):
    """A generated phantom CT (``recokd.data.phantom``), read into ``scene`` by MRML's volume reader."""
    import slicer

    from recokd.data.phantom import generate_case

    image, _labels = generate_case(seed=7, case=0).to_sitk()
    path = folder / "Phantom CT.nrrd"
    sitk.WriteImage(image, str(path))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Phantom CT")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise RuntimeError(f"MRML could not read {path}")
    return node


def test_capture_the_panel(make_panel, panel_standin_launcher, app, module, scene, tmp_path, monkeypatch):
    from panel import pump

    monkeypatch.setenv("RECOKD_BUNDLED_MODELS_DIR", str(REPO / "Resources" / "Models"))
    phantom_volume(scene, tmp_path)
    panel = make_panel()
    ui = panel.ui
    panel.wait_idle(timeout=120)
    panel.choose(ui.modelComboBox, MODEL)
    panel.choose(ui.deviceComboBox, "cpu")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    panel.save_screenshot(SCREENSHOTS / "ReCoKDSegment.png")

    panel.click(ui.segmentButton)
    pump(lambda: ui.segmentStatusLabel.text.startswith("Predicting") or not panel.runs(), timeout=300,
         what="the prediction")
    assert panel.runs(), f"the segmentation ended before it was predicting: {ui.segmentStatusLabel.text}"
    panel.save_screenshot(SCREENSHOTS / "ReCoKDSegment-segmenting.png")
    panel.wait_idle(timeout=600)
    assert ui.segmentStatusLabel.text.startswith("Done"), app.dialogs.errors
    panel.save_screenshot(SCREENSHOTS / "ReCoKDSegment-done.png")

    monkeypatch.setattr(module.ReCoKDSegmentLogic, "launcher", staticmethod(lambda: panel_standin_launcher))
    ui.segmentCollapsibleButton.collapsed = True
    panel.expand(ui.distillCollapsibleButton)
    panel.type_into(ui.teacherPathLineEdit, "/data/nnUNet_results/Dataset990_ReCoKDPhantom/"
                                            "nnUNetTrainer__nnUNetPlans__3d_fullres")
    panel.type_into(ui.datasetLineEdit, "990")
    panel.type_into(ui.workFolderPathLineEdit, str(tmp_path / "ReCoKD-distill"))
    panel.click(ui.startDistillButton)
    pump(lambda: "epoch 1/" in ui.distillStatusLabel.text, what="the first epoch")
    panel.save_screenshot(SCREENSHOTS / "ReCoKDSegment-distilling.png")


if __name__ == "__main__":
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--rootdir", str(TESTING), __file__]))
