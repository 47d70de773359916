"""A model's custom structures become known to Slicer's terminologies (the real
``vtkSlicerTerminologiesModuleLogic`` of the slicer-core wheel): merged across models, kept in the
user terminology folder that Slicer loads at start-up, and session-only when that cannot be written."""

from __future__ import annotations

import json

import pytest
from bridge_support import SLICER_CORE_MISSING

slicer = pytest.importorskip("slicer", reason=SLICER_CORE_MISSING)

from ReCoKDSegmentLib.labels import CUSTOM_TERMINOLOGY_CONTEXT, labels_from_dicts  # noqa: E402
from ReCoKDSegmentLib.terminology import (  # noqa: E402
    CONTEXT_FILE_NAME,
    custom_terminology_context,
    register_custom_terminology,
)

ANATOMY = {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"}
CUSTOM = {"scheme": "ReCoKD", "code": "structure", "meaning": "Structure"}


def label(value, name, type_code, color, custom=True, modifier=None, category=CUSTOM):
    return {"value": value, "name": name, "color": color, "category": category,
            "type": {"scheme": "ReCoKD" if custom else "SCT", "code": type_code, "meaning": name},
            "modifier": modifier, "custom": custom}


MODEL_A = labels_from_dicts([
    label(1, "Liver", "10200004", [221, 130, 101], custom=False, category=ANATOMY),
    label(2, "Tumour bed", "tumour-bed", [200, 10, 10]),
    label(3, "Odd~name^here", "odd", [1, 2, 3],
          modifier={"scheme": "ReCoKD", "code": "upper", "meaning": "Upper"}),
])
MODEL_B = labels_from_dicts([label(1, "Drain", "drain", [10, 200, 10])])


def known_type(logic, entry_string: str):
    """The category, type and modifier Slicer resolves for a segment's terminology entry, via the loaded context."""
    entry = slicer.vtkSlicerTerminologyEntry()
    assert logic.DeserializeTerminologyEntry(entry_string, entry)
    category = slicer.vtkSlicerTerminologyCategory()
    name = entry.GetTerminologyContextName()
    found = None
    for i in range(logic.GetNumberOfCategoriesInTerminology(name)):
        logic.GetNthCategoryInTerminology(name, i, category)
        if category.GetCodeValue() != entry.GetCategoryObject().GetCodeValue():
            continue
        kind = slicer.vtkSlicerTerminologyType()
        for j in range(logic.GetNumberOfTypesInTerminologyCategory(name, category)):
            logic.GetNthTypeInTerminologyCategory(name, category, j, kind)
            if kind.GetCodeValue() == entry.GetTypeObject().GetCodeValue():
                found = (category.GetCodeMeaning(), kind.GetCodeMeaning(), kind.GetRecommendedDisplayRGBValue())
    return found


@pytest.fixture
def terminologies(tmp_path):
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    logic.SetUserContextsPath(str(tmp_path / "Terminologies"))
    return logic


def test_no_custom_label_registers_nothing(terminologies, tmp_path):
    assert custom_terminology_context(MODEL_A[:1]) is None
    assert register_custom_terminology(MODEL_A[:1], terminologies) is None
    assert not (tmp_path / "Terminologies").exists()


def test_custom_structures_show_their_category_and_type(terminologies):
    path = register_custom_terminology(MODEL_A, terminologies)
    assert path.name == CONTEXT_FILE_NAME
    assert known_type(terminologies, MODEL_A[1].terminology_entry()) == ("Structure", "Tumour bed", (200, 10, 10))
    odd = MODEL_A[2].terminology_entry()
    assert known_type(terminologies, odd)[:2] == ("Structure", "Odd name here")  # delimiters as in the entry
    modifier = json.loads(path.read_text())["SegmentationCodes"]["Category"][0]["Type"][1]["Modifier"]
    assert modifier == [{"CodingSchemeDesignator": "ReCoKD", "CodeValue": "upper", "CodeMeaning": "Upper",
                         "recommendedDisplayRGBValue": [1, 2, 3]}]


def test_a_second_model_adds_to_the_first_and_a_restart_loads_both(terminologies, tmp_path):
    register_custom_terminology(MODEL_A, terminologies)
    register_custom_terminology(MODEL_B, terminologies)
    assert known_type(terminologies, MODEL_A[1].terminology_entry())[1] == "Tumour bed"  # not replaced by B's
    assert known_type(terminologies, MODEL_B[0].terminology_entry())[1] == "Drain"

    restarted = slicer.vtkSlicerTerminologiesModuleLogic()  # Slicer's next start: user contexts load with the scene
    restarted.SetUserContextsPath(str(tmp_path / "Terminologies"))
    restarted.SetMRMLScene(slicer.vtkMRMLScene())
    assert known_type(restarted, MODEL_A[1].terminology_entry())[1] == "Tumour bed"
    assert known_type(restarted, MODEL_B[0].terminology_entry())[1] == "Drain"


def test_a_foreign_or_broken_file_of_that_name_is_replaced(terminologies, tmp_path):
    folder = tmp_path / "Terminologies"
    folder.mkdir()
    (folder / CONTEXT_FILE_NAME).write_text("{not json")
    register_custom_terminology(MODEL_B, terminologies)
    context = json.loads((folder / CONTEXT_FILE_NAME).read_text())
    assert context["SegmentationCategoryTypeContextName"] == CUSTOM_TERMINOLOGY_CONTEXT
    assert known_type(terminologies, MODEL_B[0].terminology_entry())[1] == "Drain"


def test_an_unwritable_folder_still_registers_for_the_session(tmp_path, caplog):
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    (tmp_path / "a-file").write_text("")
    logic.SetUserContextsPath(str(tmp_path / "a-file" / "Terminologies"))  # cannot be created
    assert register_custom_terminology(MODEL_B, logic) is None
    assert known_type(logic, MODEL_B[0].terminology_entry())[1] == "Drain"
    assert "for this session only" in caplog.text
