"""The Distil section of the real panel, driven as a user: fill in the teacher, dataset and work
folder, start a distillation, watch it train, and stop it; and what the other sections allow
meanwhile."""

from __future__ import annotations

import pytest
from bridge_support import SLICER_CORE_MISSING
from gui_support import PYSIDE6_MISSING

pytest.importorskip("PySide6", reason=PYSIDE6_MISSING)
pytest.importorskip("slicer", reason=SLICER_CORE_MISSING)

from panel import pump  # noqa: E402


@pytest.fixture
def distil_panel(make_panel, panel_standin_launcher, oblique_volume, tmp_path):
    """The panel with its Distil section opened and filled in; the model list has arrived."""
    panel = make_panel(panel_standin_launcher)
    panel.wait_idle()
    ui = panel.ui
    panel.expand(ui.distillCollapsibleButton)
    panel.type_into(ui.teacherPathLineEdit, str(tmp_path / "Dataset990_Phantom" / "nnUNetTrainer__nnUNetPlans__3d_fullres"))
    panel.type_into(ui.datasetLineEdit, "990")
    panel.type_into(ui.workFolderPathLineEdit, str(tmp_path / "work"))
    ui.epochsSpinBox.value = 40
    panel.choose(ui.distillDeviceComboBox, "cpu")
    return panel


def distill_buttons(ui) -> dict[str, bool]:
    return {name: getattr(ui, name).enabled for name in ("startDistillButton", "resumeDistillButton",
                                                          "stopDistillButton", "installButton")}


def test_start_then_stop_a_distillation(distil_panel, app, tmp_path):
    ui = distil_panel.ui
    assert distill_buttons(ui) == {"startDistillButton": True, "resumeDistillButton": True,
                                   "stopDistillButton": False, "installButton": True}
    assert not ui.distillProgressBar.visible

    distil_panel.click(ui.startDistillButton)

    assert distill_buttons(ui) == {"startDistillButton": False, "resumeDistillButton": False,
                                   "stopDistillButton": True, "installButton": False}
    assert ui.distillProgressBar.visible and (tmp_path / "work").is_dir()
    pump(lambda: "epoch 1/40" in ui.distillStatusLabel.text, what="the first epoch")
    assert ui.distillStatusLabel.text.startswith("Training: epoch 1/40, train loss 0.9")
    command = distil_panel.logic.distillRunner.step.command
    assert command[command.index("--teacher") + 1].endswith("nnUNetTrainer__nnUNetPlans__3d_fullres")
    assert command[command.index("--dataset") + 1] == "990" and "--resume" not in command
    assert ui.segmentButton.enabled and ui.segmentButton.text == "Segment", "segmenting stays possible"

    distil_panel.click(ui.stopDistillButton)
    distil_panel.wait_idle()

    assert ui.distillStatusLabel.text == "Stopped; Resume continues from the last checkpoint in the work folder."
    assert distill_buttons(ui) == {"startDistillButton": True, "resumeDistillButton": True,
                                   "stopDistillButton": False, "installButton": True}
    assert not ui.distillProgressBar.visible and distil_panel.logic.distillRunner.cancelled
    assert app.dialogs.errors == []


def test_resume_passes_resume_and_a_missing_dataset_is_shown_as_an_error(distil_panel, app, module, slot_errors):
    ui = distil_panel.ui
    distil_panel.click(ui.resumeDistillButton)
    assert "--resume" in distil_panel.logic.distillRunner.step.command
    distil_panel.click(ui.stopDistillButton)
    distil_panel.wait_idle()

    distil_panel.type_into(ui.datasetLineEdit, "  ")
    distil_panel.click(ui.startDistillButton)

    assert app.dialogs.errors == ["Could not start the distillation.\n\nEnter the dataset (nnU-Net id or name)."]
    (error,) = slot_errors  # shown, then raised again by Slicer's tryWithErrorDisplay (to the console)
    assert isinstance(error, module.ReCoKDSegmentError)
    slot_errors.clear()
    assert ui.startDistillButton.enabled and not ui.stopDistillButton.enabled


def test_typing_in_the_distil_fields_leaves_the_open_model_list_alone(distil_panel):
    """Each keystroke changes the parameter node; the model list must not be rebuilt under the user."""
    combo = distil_panel.ui.modelComboBox
    marker_role = 256 + 7  # a role of our own, gone if the list is cleared and filled again
    combo.setItemData(0, "still the same list", marker_role)
    distil_panel.type_into(distil_panel.ui.datasetLineEdit, "991")
    assert combo.itemData(0, marker_role) == "still the same list"
    assert combo.currentText == "threshold"


def test_scans_instead_of_a_dataset_with_labels_optional(distil_panel, tmp_path):
    ui = distil_panel.ui
    assert ui.datasetLineEdit.visible and not ui.imagesPathLineEdit.visible and not ui.useLabelsCheckBox.visible

    distil_panel.choose(ui.trainingDataComboBox, "scans")

    assert not ui.datasetLineEdit.visible and not ui.datasetLabel.visible
    assert ui.imagesPathLineEdit.visible and ui.useLabelsCheckBox.visible and ui.labelsPathLineEdit.visible
    assert not ui.labelsPathLineEdit.enabled, "labels are optional: off until ticked"
    distil_panel.type_into(ui.imagesPathLineEdit, str(tmp_path / "scans"))
    distil_panel.click(ui.startDistillButton)
    command = distil_panel.logic.distillRunner.step.command
    assert command[command.index("--images") + 1] == str(tmp_path / "scans")
    assert "--dataset" not in command and "--labels" not in command
    distil_panel.click(ui.stopDistillButton)
    distil_panel.wait_idle()

    distil_panel.click(ui.useLabelsCheckBox)
    assert ui.labelsPathLineEdit.enabled
    distil_panel.type_into(ui.labelsPathLineEdit, str(tmp_path / "labels"))
    distil_panel.click(ui.startDistillButton)
    command = distil_panel.logic.distillRunner.step.command
    assert command[command.index("--labels") + 1] == str(tmp_path / "labels")
    distil_panel.click(ui.stopDistillButton)
    distil_panel.wait_idle()
