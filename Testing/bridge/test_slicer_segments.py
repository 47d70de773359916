"""Segments carry the model's names, colours and terminology; preparing touches no scene; the
result lands next to the volume, or replaces an existing segmentation only when asked."""

from __future__ import annotations

import numpy as np
import pytest
from bridge_support import SLICER_CORE_MISSING, phantom_labels

slicer = pytest.importorskip("slicer", reason=SLICER_CORE_MISSING)

import vtk  # noqa: E402
from ReCoKDSegmentLib.labels import (  # noqa: E402
    CUSTOM_TERMINOLOGY_CONTEXT,
    TERMINOLOGY_CONTEXT,
    SegmentLabel,
    labels_from_dicts,
)
from ReCoKDSegmentLib.segmentations import (  # noqa: E402
    commit_segmentation,
    prepare_segmentation,
    write_segmentation_file,
)
from ReCoKDSegmentLib.volumes import array_from_volume  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

ANATOMY = {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"}
LABEL_DICTS = [
    {"value": 1, "name": "Left kidney", "color": [185, 102, 83], "category": ANATOMY,
     "type": {"scheme": "SCT", "code": "64033007", "meaning": "Kidney"},
     "modifier": {"scheme": "SCT", "code": "7771000", "meaning": "Left"}, "custom": False},
    {"value": 2, "name": "Corner thing", "color": [10, 200, 30],
     "category": {"scheme": "ReCoKD", "code": "segment", "meaning": "Segment"},
     "type": {"scheme": "ReCoKD", "code": "corner", "meaning": "Corner^thing~odd|name"}, "modifier": None,
     "custom": True},
    {"value": 3, "name": "Liver", "color": [221, 130, 101], "category": ANATOMY,
     "type": {"scheme": "SCT", "code": "10200004", "meaning": "Liver"}, "modifier": None, "custom": False},
    {"value": 7, "name": "Absent organ", "color": [0, 0, 255], "category": ANATOMY,
     "type": {"scheme": "SCT", "code": "78961009", "meaning": "Spleen"}, "modifier": None, "custom": False},
]
LABELS = labels_from_dicts(LABEL_DICTS)


def prepared_for(volume, labels=LABELS):
    _, geometry = array_from_volume(volume)
    return prepare_segmentation(phantom_labels(), geometry, labels, volume)


def deserialize(entry: str):
    terminology = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic().DeserializeTerminologyEntry(entry, terminology)
    return terminology


def test_segments_have_names_colours_and_terminology(oblique_volume, scene):
    node = commit_segmentation(prepared_for(oblique_volume), scene, name="Phantom segmentation")
    segmentation = node.GetSegmentation()

    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == [
        "Left kidney", "Corner thing", "Liver", "Absent organ"]
    kidney = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Left kidney"))
    assert kidney.GetColor() == pytest.approx((185 / 255, 102 / 255, 83 / 255))
    assert kidney.GetLabelValue() == 1

    entry = deserialize(kidney.GetTerminology())
    assert entry.GetTerminologyContextName() == TERMINOLOGY_CONTEXT
    assert (entry.GetCategoryObject().GetCodingSchemeDesignator(), entry.GetCategoryObject().GetCodeValue()) == (
        "SCT", "123037004")
    assert (entry.GetTypeObject().GetCodeValue(), entry.GetTypeObject().GetCodeMeaning()) == ("64033007", "Kidney")
    assert (entry.GetTypeModifierObject().GetCodeValue(), entry.GetTypeModifierObject().GetCodeMeaning()) == (
        "7771000", "Left")


def test_custom_label_uses_the_custom_context_and_survives_delimiters_in_meanings(oblique_volume, scene):
    node = commit_segmentation(prepared_for(oblique_volume), scene)
    segmentation = node.GetSegmentation()
    corner = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Corner thing"))

    entry = deserialize(corner.GetTerminology())
    assert entry.GetTerminologyContextName() == CUSTOM_TERMINOLOGY_CONTEXT
    assert entry.GetTypeObject().GetCodingSchemeDesignator() == "ReCoKD"
    assert entry.GetTypeObject().GetCodeMeaning() == "Corner thing odd name"
    assert not entry.GetTypeModifierObject().GetCodeValue()


def test_terminology_entry_string_format():
    liver = SegmentLabel.from_dict(LABEL_DICTS[2])
    assert liver.terminology_entry() == (
        "Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure"
        "~SCT^10200004^Liver~^^~Anatomic codes - DICOM master list~^^~^^"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [({"color": [0, 0, 300]}, "colour"), ({"value": 0}, "1..65535")],
)
def test_invalid_labels_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        labels_from_dicts([{**LABEL_DICTS[0], **change}])


def test_duplicate_label_values_are_refused():
    with pytest.raises(ValueError, match="not unique"):
        labels_from_dicts([LABEL_DICTS[0], {**LABEL_DICTS[2], "value": 1}])


def test_absent_label_gives_an_empty_segment_and_unknown_values_become_background(oblique_volume, scene):
    _, geometry = array_from_volume(oblique_volume)
    without_liver = [label for label in LABELS if label.value != 3]  # value 3 is in the array
    node = commit_segmentation(prepare_segmentation(phantom_labels(), geometry, without_liver, oblique_volume), scene)
    segmentation = node.GetSegmentation()

    absent = segmentation.GetSegmentIdBySegmentName("Absent organ")
    labelmap = slicer.vtkOrientedImageData()
    node.GetBinaryLabelmapRepresentation(absent, labelmap)
    assert not numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).any()
    shared = segmentation.GetSegment(absent).GetRepresentation(
        slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    values = set(np.unique(numpy_support.vtk_to_numpy(shared.GetPointData().GetScalars())).tolist())
    assert values == {0, 1, 2}  # the unlabelled 3 was cleared


def test_preparing_does_not_touch_the_scene(oblique_volume, scene):
    before = scene.GetNumberOfNodes()
    prepared = prepared_for(oblique_volume)
    assert scene.GetNumberOfNodes() == before
    assert prepared.node.GetScene() is None
    assert sorted(prepared.segment_ids) == [1, 2, 3, 7]


def test_new_segmentation_is_placed_next_to_the_volume(oblique_volume, scene):
    hierarchy = scene.GetSubjectHierarchyNode()
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient"), "Study")
    hierarchy.CreateItem(study, oblique_volume)

    node = commit_segmentation(prepared_for(oblique_volume), scene, name="Phantom segmentation")

    assert node.GetScene() is scene
    assert node.GetName() == "Phantom segmentation"
    assert node.GetDisplayNode() is not None
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study


def test_existing_segmentation_is_replaced_only_when_given(oblique_volume, scene):
    existing = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Earlier result")
    existing.GetSegmentation().AddEmptySegment("old", "Old segment")
    before = scene.GetNumberOfNodes()

    node = commit_segmentation(prepared_for(oblique_volume), scene, output_node=existing)

    assert node is existing
    assert scene.GetNumberOfNodes() == before
    segmentation = existing.GetSegmentation()
    assert segmentation.GetSegment("old") is None
    assert segmentation.GetNumberOfSegments() == 4
    assert node.GetName() == "Earlier result"
    labelmap = slicer.vtkOrientedImageData()
    existing.GetBinaryLabelmapRepresentation(segmentation.GetSegmentIdBySegmentName("Corner thing"), labelmap)
    mask = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(phantom_labels().shape)
    np.testing.assert_array_equal(mask.astype(bool), phantom_labels() == 2)


def test_output_node_of_another_scene_is_refused(oblique_volume, scene):
    other = slicer.vtkMRMLScene().AddNewNodeByClass("vtkMRMLSegmentationNode")
    with pytest.raises(ValueError, match="not in this scene"):
        commit_segmentation(prepared_for(oblique_volume), scene, output_node=other)


def test_seg_nrrd_file_keeps_segments_and_voxels(oblique_volume, tmp_path):
    path = write_segmentation_file(prepared_for(oblique_volume), tmp_path / "result.seg.nrrd")

    other_scene = slicer.vtkMRMLScene()
    node = other_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    liver = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Liver"))
    assert liver.GetColor() == pytest.approx((221 / 255, 130 / 255, 101 / 255), abs=1e-5)  # file keeps 6 digits
    assert deserialize(liver.GetTerminology()).GetTypeObject().GetCodeValue() == "10200004"
    labelmap = slicer.vtkOrientedImageData()
    node.GetBinaryLabelmapRepresentation(segmentation.GetSegmentIdBySegmentName("Left kidney"), labelmap)
    assert numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).sum() == (phantom_labels() == 1).sum()


def _reference_geometry(node) -> str:
    return node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())


@pytest.mark.parametrize("replace", [False, True], ids=["new node", "replaced node"])
def test_a_volume_under_a_linear_transform_gives_its_own_grid_transformed_once(oblique_volume, scene, replace):
    """The segmentation sits under the volume's transform, so its reference geometry must be the volume's
    own grid (in the shared transform's frame), not that grid already moved by the transform."""
    untransformed = commit_segmentation(prepared_for(oblique_volume), scene, name="no transform")
    expected = _reference_geometry(untransformed)
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 25.0)
    matrix.SetElement(1, 3, -12.5)
    matrix.SetElement(0, 0, 0.0), matrix.SetElement(0, 1, -1.0), matrix.SetElement(1, 0, 1.0), matrix.SetElement(1, 1, 0.0)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "Registration")
    transform.SetMatrixTransformToParent(matrix)
    oblique_volume.SetAndObserveTransformNodeID(transform.GetID())
    output = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Earlier result") if replace else None
    node = commit_segmentation(prepared_for(oblique_volume), scene, output_node=output, name="transformed")
    assert node.GetTransformNodeID() == transform.GetID()
    assert _reference_geometry(node) == expected
