"""The Slicer module's bridge end to end: a phantom volume node -> real ``recokd segment`` with a
trained model package -> a segmentation node in a real MRML scene (slicer-core)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (real MRML classes; Linux x86_64 only)")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "ReCoKDSegment"))

from conftest import recokd  # noqa: E402
from ReCoKDSegmentLib.jobs import SegmentVolumeJob  # noqa: E402
from ReCoKDSegmentLib.runner import ProcessRunner, RunnerState  # noqa: E402
from ReCoKDSegmentLib.volumes import read_image  # noqa: E402


def _volume_node(scene, path: Path):
    """Load a NIfTI file as a scalar volume node with Slicer's own reader (as File > Add Data does)."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName("PhantomCT")
    scene.AddNode(node)
    assert storage.ReadData(node), f"Slicer could not read {path}"
    return node


def test_phantom_volume_is_segmented_into_named_aligned_segments(tiny_pipeline, tiny_teacher_package,
                                                                 phantom_test_case, tmp_path):
    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    volume = _volume_node(scene, phantom_test_case[0])
    before = scene.GetNumberOfNodes()

    job = SegmentVolumeJob([sys.executable, "-m", "recokd"], scene, volume, str(tiny_teacher_package),
                           device="cpu", fast=True, temp_root=tmp_path)
    runner = ProcessRunner()
    runner.start([job.prepare()], on_finished=[job.cleanup])
    assert runner.wait(timeout=300) is RunnerState.DONE, runner.error
    node = runner.output
    assert scene.GetNumberOfNodes() > before and node.GetScene() is scene

    names = [node.GetSegmentation().GetNthSegment(i).GetName()
             for i in range(node.GetSegmentation().GetNumberOfSegments())]
    assert names == ["liver", "kidney_left", "kidney_right", "adrenal_gland", "vessel"]

    # The same labels as the command line gives for the same file, on the volume's own grid.
    direct = tmp_path / "direct.nii.gz"
    recokd("segment", "-m", str(tiny_teacher_package), "-i", str(phantom_test_case[0]), "-o", str(direct),
           "--device", "cpu", "--fast", "--progress", "none", env=tiny_pipeline.env)
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(direct)))
    exported = tmp_path / "from_scene.nii.gz"
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    scene.AddNode(labelmap)
    assert logic.ExportAllSegmentsToLabelmapNode(node, labelmap, 0)
    writer = slicer.vtkMRMLVolumeArchetypeStorageNode()
    writer.SetFileName(str(exported))
    assert writer.WriteData(labelmap)
    from_scene, geometry = read_image(exported)
    source = sitk.ReadImage(str(phantom_test_case[0]))
    np.testing.assert_allclose(geometry.spacing, source.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(geometry.direction, source.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(geometry.origin, source.GetOrigin(), atol=1e-3)
    # Segment order == label order, so the exported label values equal the predicted ones.
    np.testing.assert_array_equal(from_scene.astype(np.uint8), expected)
