"""PROTOCOL TESTS: the module's segment / batch / distill flows end to end through the real runner,
real subprocesses and real MRML scenes, with ``recokd_protocol_standin.py`` standing in for the
``recokd`` command line (it speaks the same arguments and ``--progress json`` protocol but does
no deep learning). The run with a real trained model is the end-to-end suite's job."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from bridge_support import OBLIQUE_IJK_TO_RAS, SLICER_CORE_MISSING, Recorder, alive, phantom_voxels, wait_for

slicer = pytest.importorskip("slicer", reason=SLICER_CORE_MISSING)
sitk = pytest.importorskip("SimpleITK")

import vtk  # noqa: E402
from ReCoKDSegmentLib.commands import DistillParameters, distill_command, models_add_command  # noqa: E402
from ReCoKDSegmentLib.jobs import SegmentFilesJob, SegmentVolumeJob  # noqa: E402
from ReCoKDSegmentLib.runner import RunnerState, Step  # noqa: E402
from ReCoKDSegmentLib.volumes import array_from_volume, image_from_array, matrix_to_numpy  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

S = RunnerState


def run_job(job, recorder=None, timeout=60):
    runner = (recorder or Recorder()).runner()
    runner.start([job.prepare()], on_finished=[job.cleanup])
    runner.wait(timeout=timeout)
    return runner


def expected_labels() -> np.ndarray:
    """What the stand-in computes from ``phantom_voxels()``: > 0 -> 1, corner voxel -> 2."""
    labels = (phantom_voxels() > 0).astype(np.uint8)
    labels[0, 0, 0] = 2
    return labels


def test_segment_volume_adds_an_aligned_named_segmentation(scene, oblique_volume, standin_launcher, tmp_path):
    recorder = Recorder()
    before = scene.GetNumberOfNodes()
    job = SegmentVolumeJob(standin_launcher, scene, oblique_volume, "phantom-model", device="cpu", fast=True,
                           temp_root=tmp_path)

    runner = run_job(job, recorder)

    assert runner.state is S.DONE, runner.error
    assert recorder.states == [S.RUNNING, S.IMPORTING, S.DONE]
    assert recorder.progress[-1].fraction == 1.0
    assert "log line for input.nrrd (not JSON)" in recorder.logs
    assert "stderr log for input.nrrd" in recorder.logs
    node = runner.output
    assert node.GetScene() is scene and node.GetName() == "Phantom segmentation"
    assert scene.GetNumberOfNodes() > before
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(2)] == ["Bright block", "Corner"]
    labels = expected_labels()
    for value, name in [(1, "Bright block"), (2, "Corner")]:
        labelmap = slicer.vtkOrientedImageData()
        node.GetBinaryLabelmapRepresentation(segmentation.GetSegmentIdBySegmentName(name), labelmap)
        matrix = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(matrix)
        np.testing.assert_array_equal(matrix_to_numpy(matrix), OBLIQUE_IJK_TO_RAS)
        voxels = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(labels.shape)
        np.testing.assert_array_equal(voxels.astype(bool), labels == value)
    assert not job.work_dir.exists()


def test_segment_volume_tells_slicers_terminologies_the_custom_structure(scene, oblique_volume, standin_launcher,
                                                                        tmp_path):
    terminologies = slicer.vtkSlicerTerminologiesModuleLogic()
    terminologies.SetUserContextsPath(str(tmp_path / "Terminologies"))
    job = SegmentVolumeJob(standin_launcher, scene, oblique_volume, "phantom-model", device="cpu", fast=True,
                           temp_root=tmp_path, terminologies=terminologies)
    runner = run_job(job, Recorder())
    assert runner.state is S.DONE, runner.error
    segmentation = runner.output.GetSegmentation()
    corner = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Corner"))
    entry = slicer.vtkSlicerTerminologyEntry()
    assert terminologies.DeserializeTerminologyEntry(corner.GetTerminology(), entry)
    category = slicer.vtkSlicerTerminologyCategory()
    assert terminologies.GetNumberOfCategoriesInTerminology(entry.GetTerminologyContextName()) == 1
    terminologies.GetNthCategoryInTerminology(entry.GetTerminologyContextName(), 0, category)
    kind = slicer.vtkSlicerTerminologyType()
    assert terminologies.GetNumberOfTypesInTerminologyCategory(entry.GetTerminologyContextName(), category) == 1
    terminologies.GetNthTypeInTerminologyCategory(entry.GetTerminologyContextName(), category, 0, kind)
    assert (kind.GetCodingSchemeDesignator(), kind.GetCodeValue(), kind.GetCodeMeaning()) == (
        "ReCoKD", "corner", "Corner")


def test_segment_volume_can_replace_a_chosen_segmentation(scene, oblique_volume, standin_launcher, tmp_path):
    existing = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Chosen output")
    existing.GetSegmentation().AddEmptySegment("stale")
    before = scene.GetNumberOfNodes()

    runner = run_job(SegmentVolumeJob(standin_launcher, scene, oblique_volume, "m", output_node=existing,
                                      temp_root=tmp_path))

    assert runner.state is S.DONE, runner.error
    assert runner.output is existing and scene.GetNumberOfNodes() == before
    assert existing.GetSegmentation().GetSegment("stale") is None
    assert existing.GetSegmentation().GetNumberOfSegments() == 2


@pytest.mark.skipif(os.name == "nt", reason="checks POSIX process groups")
def test_cancel_leaves_the_scene_unchanged_and_ends_the_process_tree(
    scene, oblique_volume, standin_launcher, tmp_path, monkeypatch
):
    pid_file = tmp_path / "pids"
    monkeypatch.setenv("STANDIN_PID_FILE", str(pid_file))
    node_ids = [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]
    recorder = Recorder()
    job = SegmentVolumeJob(standin_launcher, scene, oblique_volume, "slow", temp_root=tmp_path)
    runner = recorder.runner()
    runner.start([job.prepare()], on_finished=[job.cleanup])
    wait_for(lambda: runner.poll() and len(recorder.progress) >= 3 and pid_file.exists(), timeout=20)
    pids = [int(pid) for pid in pid_file.read_text().split()]
    assert all(alive(pid) for pid in pids)

    runner.cancel()
    assert runner.wait(timeout=20) is S.IDLE

    assert runner.cancelled and runner.output is None
    assert recorder.states == [S.RUNNING, S.CANCELLING, S.IDLE]
    assert [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())] == node_ids
    assert not job.work_dir.exists()
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=5)


def test_failure_leaves_the_scene_unchanged_and_reports_the_error(scene, oblique_volume, standin_launcher, tmp_path):
    before = scene.GetNumberOfNodes()
    job = SegmentVolumeJob(standin_launcher, scene, oblique_volume, "broken", temp_root=tmp_path)

    runner = run_job(job)

    assert runner.state is S.FAILED
    assert runner.error == "Segmentation failed: model package 'broken' is corrupt"
    assert scene.GetNumberOfNodes() == before
    assert not job.work_dir.exists()


def write_case(path: Path, volume_node) -> Path:
    voxels, geometry = array_from_volume(volume_node)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image_from_array(voxels, geometry), str(path))
    return path


def read_seg_nrrd(path: Path):
    node = slicer.vtkMRMLScene().AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    return node


def test_segment_files_writes_seg_nrrd_for_a_list_of_files(oblique_volume, standin_launcher, tmp_path):
    # Two inputs with the same file name in different folders: both must come out.
    inputs = [write_case(tmp_path / folder / "case.nrrd", oblique_volume) for folder in ("a", "b")]
    output = tmp_path / "out"

    runner = run_job(SegmentFilesJob(standin_launcher, inputs, output, "m", temp_root=tmp_path))

    assert runner.state is S.DONE, runner.error
    assert sorted(path.name for path in runner.output) == ["0001_case.seg.nrrd", "case.seg.nrrd"]
    node = read_seg_nrrd(output / "case.seg.nrrd")
    segmentation = node.GetSegmentation()
    corner = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Corner"))
    assert corner.GetTerminology().startswith("Segmentation category and type - ReCoKD~ReCoKD^segment^Segment")
    labelmap = slicer.vtkOrientedImageData()
    node.GetBinaryLabelmapRepresentation(segmentation.GetSegmentIdBySegmentName("Bright block"), labelmap)
    voxels = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
    assert voxels.sum() == (expected_labels() == 1).sum()


def test_segment_files_writes_nifti_for_a_folder(oblique_volume, standin_launcher, tmp_path):
    for name in ("one.nrrd", "two.nrrd"):
        write_case(tmp_path / "cases" / name, oblique_volume)

    runner = run_job(SegmentFilesJob(standin_launcher, tmp_path / "cases", tmp_path / "out", "m",
                                     output_format="nii.gz", temp_root=tmp_path))

    assert runner.state is S.DONE, runner.error
    assert sorted(path.name for path in runner.output) == ["one.nii.gz", "two.nii.gz"]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "one.nii.gz")))
    np.testing.assert_array_equal(labels, expected_labels())


def test_segment_files_refuses_unknown_format_and_missing_inputs(standin_launcher, tmp_path):
    with pytest.raises(ValueError, match="output format"):
        SegmentFilesJob(standin_launcher, tmp_path, tmp_path / "out", "m", output_format="dcm")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SegmentFilesJob(standin_launcher, tmp_path / "nowhere", tmp_path / "out", "m")


def test_distillation_log_and_epochs_stream_and_the_package_is_added(standin_launcher, tmp_path):
    """The command built from the panel's parameters, run through the runner: live log lines,
    per-epoch progress, then ``models add`` with the exported package."""
    parameters = DistillParameters(teacher=tmp_path / "teacher", dataset="990", work_dir=tmp_path, epochs=3,
                                   mode="logit", ms_ca="affinity", kd_weight=0.02, device="cpu")
    recorder = Recorder()
    runner = recorder.runner()
    started = time.monotonic()
    runner.start([
        Step(distill_command(standin_launcher, parameters), "Distillation", expects_result=True),
        lambda result: Step(models_add_command(standin_launcher, Path(result["package"]), overwrite=True),
                            "Adding the model"),
    ])

    assert runner.wait(timeout=60) is S.DONE, runner.error
    assert time.monotonic() - started < 60
    assert [(p.epoch, p.epochs, p.fraction) for p in recorder.progress] == [
        (1, 3, pytest.approx(1 / 3)), (2, 3, pytest.approx(2 / 3)), (3, 3, 1.0)]
    assert recorder.progress[0].message == "mode logit, MS-CA affinity"
    assert [line for line in recorder.logs if line.startswith("epoch ")] == [
        "epoch 1: train loss 0.8", "epoch 2: train loss 0.7", "epoch 3: train loss 0.6"]
    assert "Installed 'student.recokd.zip' at /models/student.recokd.zip" in recorder.logs
    assert (tmp_path / "student.recokd.zip").is_file()
