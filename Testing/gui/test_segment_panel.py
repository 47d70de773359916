"""The Segment section of the real panel, driven as a user: choose a volume and a model, click
Segment, watch the progress and the result arrive in the scene, or click again to cancel."""

from __future__ import annotations

from pathlib import Path

import pytest
from bridge_support import SLICER_CORE_MISSING
from gui_support import PYSIDE6_MISSING

pytest.importorskip("PySide6", reason=PYSIDE6_MISSING)
slicer = pytest.importorskip("slicer", reason=SLICER_CORE_MISSING)

from panel import pump  # noqa: E402


def segmentation_nodes(scene) -> list:
    collection = scene.GetNodesByClass("vtkMRMLSegmentationNode")
    return [collection.GetItemAsObject(index) for index in range(collection.GetNumberOfItems())]


def segment_names(node) -> list[str]:
    segmentation = node.GetSegmentation()
    return [segmentation.GetNthSegment(index).GetName() for index in range(segmentation.GetNumberOfSegments())]


@pytest.fixture(scope="module")
def package_file(tmp_path_factory) -> Path:
    """A tiny untrained model package (``Testing/core/tiny_student.py``): labels liver, kidney."""
    from tiny_student import tiny_package

    from recokd.package.archive import write_package

    return write_package(tiny_package(), tmp_path_factory.mktemp("package") / "tiny.recokd.zip")


def test_the_panel_lists_the_scene_the_models_and_the_choices(make_panel, panel_standin_launcher, oblique_volume):
    panel = make_panel(panel_standin_launcher)
    panel.wait_idle()
    ui = panel.ui

    assert panel.items(ui.inputVolumeSelector) == ["Phantom"]
    assert ui.inputVolumeSelector.currentNode() is oblique_volume
    assert panel.items(ui.outputSegmentationSelector) == ["Create new segmentation"]
    assert panel.items(ui.modelComboBox) == ["threshold", "slow", "Add model package..."]
    assert ui.modelComboBox.currentText == "threshold", "the first installed model is chosen"
    assert panel.items(ui.deviceComboBox) == ["auto", "cpu", "cuda"] and ui.deviceComboBox.currentText == "auto"
    assert (ui.epochsSpinBox.minimum, ui.epochsSpinBox.maximum, ui.epochsSpinBox.value) == (1, 10000, 250)
    assert not ui.segmentProgressBar.visible and ui.segmentLog.toPlainText().startswith("Listing models: ")
    assert ui.segmentStatusLabel.text == "2 models available."  # not "Done in ...": nothing was segmented


def test_a_cancelled_add_model_dialog_keeps_the_chosen_model(make_panel, panel_standin_launcher, app,
                                                              oblique_volume):
    panel = make_panel(panel_standin_launcher)
    panel.wait_idle()
    ui = panel.ui
    panel.choose(ui.modelComboBox, "slow")
    app.dialogs.chosen_file = None  # the user closes the file dialog

    panel.choose(ui.modelComboBox, "Add model package...")

    assert ui.modelComboBox.currentText == "slow" and not panel.runs()
    assert panel.items(ui.modelComboBox) == ["threshold", "slow", "Add model package..."]


def test_segment_is_enabled_only_with_a_volume_and_a_model(make_panel, panel_standin_launcher, module, scene,
                                                           oblique_volume):
    scene.RemoveNode(oblique_volume)
    panel = make_panel(panel_standin_launcher)
    ui = panel.ui
    assert ui.modelComboBox.currentIndex == -1 and not ui.segmentButton.enabled
    panel.wait_idle()  # the model list arrives: the first model is chosen; still no volume
    assert ui.modelComboBox.currentText == "threshold"
    assert not ui.segmentButton.enabled and ui.segmentButton.toolTip == "Choose an input volume and a model."

    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Loaded later")
    pump(lambda: ui.segmentButton.enabled, what="Segment to be enabled by a volume")

    assert ui.inputVolumeSelector.currentNode() is volume and ui.segmentButton.text == "Segment"
    assert ui.segmentButton.toolTip == ""


def test_segment_shows_progress_and_adds_a_segmentation_named_after_the_model(make_panel, app, scene, oblique_volume,
                                                                               package_file):
    """The real ``recokd``: the model is added from the model list's "Add model package...", then
    segments the volume."""
    panel = make_panel()
    ui = panel.ui
    panel.wait_idle()
    assert panel.items(ui.modelComboBox) == ["Add model package..."] and not ui.segmentButton.enabled
    app.dialogs.chosen_file = str(package_file)
    panel.choose(ui.modelComboBox, "Add model package...")
    panel.wait_idle(timeout=120)
    assert ui.modelComboBox.currentText == "tiny-student" and ui.segmentButton.enabled
    panel.choose(ui.deviceComboBox, "cpu")
    ui.fastCheckBox.click()
    before = segmentation_nodes(scene)

    panel.click(ui.segmentButton)

    assert ui.segmentButton.text == "Cancel" and ui.segmentButton.enabled
    assert ui.segmentProgressBar.visible and not ui.installButton.enabled
    panel.wait_idle(timeout=120)
    assert app.dialogs.errors == []
    assert ui.segmentButton.text == "Segment" and ui.installButton.enabled
    assert ui.segmentProgressBar.value == ui.segmentProgressBar.maximum and not ui.segmentProgressBar.visible
    assert ui.segmentStatusLabel.text.startswith("Done in ")
    (result,) = [node for node in segmentation_nodes(scene) if node not in before]
    assert result.GetName() == "Phantom segmentation" and segment_names(result) == ["liver", "kidney"]
    assert ui.show3DButton.segmentationNode() is result and ui.show3DButton.enabled
    assert "--fast" in " ".join(panel.logic.segmentRunner.step.command)
    assert list(Path(app.temporaryPath).iterdir()) == []


def test_clicking_segment_again_cancels_and_leaves_the_scene_unchanged(make_panel, panel_standin_launcher, app,
                                                                       scene, oblique_volume, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("STANDIN_PID_FILE", str(tmp_path / "pids"))
    panel = make_panel(panel_standin_launcher)
    ui = panel.ui
    panel.wait_idle()
    panel.choose(ui.modelComboBox, "slow")
    nodes = scene.GetNumberOfNodes()

    panel.click(ui.segmentButton)
    pump(lambda: ui.segmentProgressBar.value > 0, what="progress from the running segmentation")
    assert ui.segmentButton.text == "Cancel" and ui.segmentProgressBar.visible
    assert ui.segmentStatusLabel.text.startswith("Predicting: tile ")
    panel.click(ui.segmentButton)
    panel.wait_idle()

    assert ui.segmentStatusLabel.text == "Cancelled; the scene was not changed."
    assert scene.GetNumberOfNodes() == nodes
    assert ui.segmentButton.text == "Segment" and ui.segmentButton.enabled and not ui.segmentProgressBar.visible
    assert panel.logic.segmentRunner.cancelled and app.dialogs.errors == []
    assert list(Path(app.temporaryPath).iterdir()) == []


def test_below_the_version_floor_the_panel_shows_the_floor_and_nothing_else(app, monkeypatch, qt_application):
    from panel import Panel
    from slicer_app_standins import load_module

    monkeypatch.setattr(app, "majorVersion", 5)
    monkeypatch.setattr(app, "minorVersion", 8)
    module = load_module(monkeypatch)
    panel = Panel(module)
    try:
        labels = [child.text for child in panel.host.findChildren(__import__("qt").QLabel)]
        assert labels == [module.VERSION_FLOOR_MESSAGE] and "needs Slicer 5.10 or newer" in labels[0]
        assert panel.logic is None and not hasattr(panel.widget, "ui")
    finally:
        panel.close()  # cleanup() of a widget that set nothing up


def test_cleanup_after_a_failed_setup_raises_nothing(module, monkeypatch, qt_application):
    """A broken .ui file makes setup() raise part way; Slicer still calls cleanup() when it closes."""
    import slicer.util
    from slicer_gui_standins import qSlicerScriptedLoadableModuleWidget

    def broken_ui(path):
        raise RuntimeError(f"could not load {path}")

    monkeypatch.setattr(slicer.util, "loadUI", broken_ui)
    host = qSlicerScriptedLoadableModuleWidget()
    widget = module.ReCoKDSegmentWidget(host)
    with pytest.raises(RuntimeError, match="could not load"):
        widget.setup()
    widget.cleanup()
    host.deleteLater()
