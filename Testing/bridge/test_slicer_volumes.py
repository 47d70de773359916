"""Volume node -> array/geometry -> file, and label file -> segmentation aligned with the volume,
on an oblique grid with anisotropic spacing."""

from __future__ import annotations

import numpy as np
import pytest
from bridge_support import OBLIQUE_IJK_TO_RAS, SLICER_CORE_MISSING, phantom_labels, phantom_voxels

slicer = pytest.importorskip("slicer", reason=SLICER_CORE_MISSING)
sitk = pytest.importorskip("SimpleITK")

import vtk  # noqa: E402
from ReCoKDSegmentLib.geometry import ImageGeometry  # noqa: E402
from ReCoKDSegmentLib.labels import labels_from_dicts  # noqa: E402
from ReCoKDSegmentLib.segmentations import commit_segmentation, prepare_segmentation_from_file  # noqa: E402
from ReCoKDSegmentLib.volumes import array_from_volume, matrix_to_numpy, numpy_to_matrix, write_volume  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

LABELS = labels_from_dicts(
    {
        "value": value, "name": name, "color": color,
        "category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
        "type": {"scheme": "SCT", "code": code, "meaning": name}, "modifier": None, "custom": False,
    }
    for value, name, color, code in [(1, "Liver", [221, 130, 101], "10200004"),
                                     (2, "Spleen", [157, 108, 162], "78961009"),
                                     (3, "Pancreas", [249, 180, 111], "15776009")]
)


def lps_geometry_of(ijk_to_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spacing, origin and direction in LPS, computed directly from the RAS matrix."""
    flip = np.diag([-1.0, -1.0, 1.0])
    spacing = np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    return spacing, flip @ ijk_to_ras[:3, 3], flip @ ijk_to_ras[:3, :3] / spacing


def test_volume_node_to_file_keeps_oblique_geometry_and_voxels(oblique_volume, tmp_path):
    path = write_volume(oblique_volume, tmp_path / "input.nrrd")

    image = sitk.ReadImage(str(path))
    spacing, origin, direction = lps_geometry_of(OBLIQUE_IJK_TO_RAS)
    np.testing.assert_allclose(image.GetSpacing(), spacing, rtol=0, atol=1e-12)
    np.testing.assert_allclose(image.GetOrigin(), origin, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), direction, rtol=0, atol=1e-12)
    voxels = sitk.GetArrayFromImage(image)
    assert voxels.dtype == np.int16
    np.testing.assert_array_equal(voxels, phantom_voxels())


def test_file_written_by_bridge_reads_back_in_slicer_with_the_same_ijk_to_ras(oblique_volume, scene, tmp_path):
    path = write_volume(oblique_volume, tmp_path / "input.nrrd")

    reread = slicer.vtkMRMLScalarVolumeNode()
    scene.AddNode(reread)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(reread)
    matrix = vtk.vtkMatrix4x4()
    reread.GetIJKToRASMatrix(matrix)
    np.testing.assert_allclose(matrix_to_numpy(matrix), OBLIQUE_IJK_TO_RAS, rtol=0, atol=1e-9)


def test_array_from_volume_is_a_read_only_zyx_view(oblique_volume):
    voxels, geometry = array_from_volume(oblique_volume)
    assert voxels.shape == (6, 9, 11)
    assert not voxels.flags.writeable
    np.testing.assert_allclose(geometry.ijk_to_ras(), OBLIQUE_IJK_TO_RAS, rtol=0, atol=1e-12)


def test_geometry_round_trips_through_ijk_to_ras():
    geometry = ImageGeometry.from_ijk_to_ras(OBLIQUE_IJK_TO_RAS)
    np.testing.assert_allclose(geometry.ijk_to_ras(), OBLIQUE_IJK_TO_RAS, rtol=0, atol=1e-12)
    np.testing.assert_allclose(geometry.spacing, [0.7, 1.3, 2.5])
    with pytest.raises(ValueError, match="zero-length axis"):
        ImageGeometry.from_ijk_to_ras(np.diag([1.0, 0.0, 1.0, 1.0]))


def test_multi_component_volume_is_refused(scene):
    image = vtk.vtkImageData()
    image.SetDimensions(2, 2, 2)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    node = slicer.vtkMRMLVectorVolumeNode()
    node.SetAndObserveImageData(image)
    scene.AddNode(node)
    with pytest.raises(ValueError, match="3 components"):
        array_from_volume(node)


def write_labels_like(volume_node, labels: np.ndarray, path, shift_mm: float = 0.0):
    """Label image in the volume's geometry, as ``recokd segment`` writes it (NIfTI: float32 header)."""
    _, geometry = array_from_volume(volume_node)
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(tuple(o + shift_mm for o in geometry.origin))
    image.SetDirection(geometry.direction)
    sitk.WriteImage(image, str(path), True)
    return path


def segment_array(segmentation_node, segment_id):
    """A segment's binary (0/1) labelmap and its IJK-to-RAS, from the segmentation's own storage."""
    labelmap = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    columns, rows, slices = labelmap.GetDimensions()
    voxels = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(slices, rows, columns)
    return voxels, matrix_to_numpy(matrix), labelmap.GetExtent()


def test_label_file_becomes_segmentation_aligned_with_the_volume(oblique_volume, scene, tmp_path):
    labels = phantom_labels()
    path = write_labels_like(oblique_volume, labels, tmp_path / "labels.nii.gz")

    node = commit_segmentation(prepare_segmentation_from_file(path, LABELS, oblique_volume), scene, name="Result")

    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3
    for label in LABELS:
        segment_id = segmentation.GetSegmentIdBySegmentName(label.name)
        voxels, ijk_to_ras, extent = segment_array(node, segment_id)
        # Exactly the volume's grid (snapped from the float32 NIfTI header), not merely close to it.
        np.testing.assert_array_equal(ijk_to_ras, OBLIQUE_IJK_TO_RAS)
        assert extent == (0, 10, 0, 8, 0, 5)
        np.testing.assert_array_equal(voxels.astype(bool), labels == label.value)

    reference = segmentation.GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    )
    expected = slicer.vtkMRMLSegmentationNode()
    expected.SetReferenceImageGeometryParameterFromVolumeNode(oblique_volume)
    assert reference == expected.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    )


def test_export_to_labelmap_in_volume_geometry_gives_back_the_labels(oblique_volume, scene, tmp_path):
    """Slicer's own export of the segments onto the volume grid reproduces the label file."""
    labels = phantom_labels()
    path = write_labels_like(oblique_volume, labels, tmp_path / "labels.nii.gz")
    node = commit_segmentation(prepare_segmentation_from_file(path, LABELS, oblique_volume), scene)

    exported = slicer.vtkMRMLLabelMapVolumeNode()
    scene.AddNode(exported)
    ids = vtk.vtkStringArray()
    for label in LABELS:
        ids.InsertNextValue(node.GetSegmentation().GetSegmentIdBySegmentName(label.name))
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(node, ids, exported, oblique_volume)
    voxels, _ = array_from_volume(exported)
    np.testing.assert_array_equal(voxels, labels)


def test_label_file_on_another_grid_keeps_its_own_geometry(oblique_volume, scene, tmp_path):
    path = write_labels_like(oblique_volume, phantom_labels(), tmp_path / "shifted.nii.gz", shift_mm=5.0)

    node = commit_segmentation(prepare_segmentation_from_file(path, LABELS, oblique_volume), scene)

    segment_id = node.GetSegmentation().GetSegmentIdBySegmentName("Liver")
    _, ijk_to_ras, _ = segment_array(node, segment_id)
    expected = OBLIQUE_IJK_TO_RAS.copy()
    expected[:3, 3] += np.diag([-1.0, -1.0, 1.0]) @ np.full(3, 5.0)
    np.testing.assert_allclose(ijk_to_ras, expected, rtol=0, atol=1e-4)


def test_segmentation_follows_the_volume_transform(oblique_volume, scene, tmp_path):
    transform = slicer.vtkMRMLLinearTransformNode()
    scene.AddNode(transform)
    shift = np.eye(4)
    shift[0, 3] = 10.0
    transform.SetMatrixTransformToParent(numpy_to_matrix(shift))
    oblique_volume.SetAndObserveTransformNodeID(transform.GetID())
    path = write_labels_like(oblique_volume, phantom_labels(), tmp_path / "labels.nii.gz")

    node = commit_segmentation(prepare_segmentation_from_file(path, LABELS, oblique_volume), scene)

    assert node.GetTransformNodeID() == transform.GetID()
