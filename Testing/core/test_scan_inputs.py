"""``recokd distill --images``: which files make which cases, and every refused input refused before any file is written."""

from __future__ import annotations

from dataclasses import replace

import blosc2
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from tiny_student import UID_ROOT, write_dicom_series

from recokd.cli import main
from recokd.data.phantom import PhantomConfig, write_dataset
from recokd.errors import RecokdError
from recokd.nnunet.teacher import load_teacher
from recokd.package.archive import load_package, write_package
from recokd.package.registry import SOURCE_BUNDLED_DIR
from recokd.package.teacher_folder import read_teacher
from recokd.scans.cases import find_cases
from recokd.scans.checks import check_scans
from recokd.scans.dataset import build_scans_dataset
from recokd.scans.teacher_labels import TeacherLabeller
from recokd.workspace import Workspace

PHANTOM_TEACHER = SOURCE_BUNDLED_DIR / "phantom-teacher.recokd.zip"


def touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def test_nnunet_channel_files_make_one_case_per_name_and_numbered_patients_stay_apart(tmp_path):
    raw = touch(tmp_path / "raw", "a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz")
    assert [(c.name, [p.name for p in c.images]) for c in find_cases(raw, None, channels=2)] == [
        ("a", ["a_0000.nii.gz", "a_0001.nii.gz"]), ("b", ["b_0000.nii.gz", "b_0001.nii.gz"])]
    numbered = touch(tmp_path / "numbered", "scan_0000.nii.gz", "scan_0001.nrrd", "notes.txt", "x.seg.nrrd")
    assert [c.name for c in find_cases(numbered, None, channels=1)] == ["scan_0000", "scan_0001"]


def test_labels_are_matched_by_case_name_and_extra_label_files_are_ignored(tmp_path):
    images = touch(tmp_path / "images", "p1_0000.nii.gz", "p2_0000.nii.gz")
    labels = touch(tmp_path / "labels", "p2.nrrd", "p9.nii.gz")
    cases = find_cases(images, labels, channels=1)
    assert [(c.name, c.label.name if c.label else None) for c in cases] == [("p1", None), ("p2", "p2.nrrd")]


@pytest.mark.parametrize("names, labels, message", [
    ((), (), "holds no scan"),
    (("notes.txt",), (), "holds no scan"),
    (("a.nii.gz", "a.nrrd"), (), "case name 'a'"),
    (("a_0000.nii.gz", "a_0000.mha"), (), "case name 'a_0000'"),
    (("a.nii.gz",), ("b.nii.gz", "c.nii.gz"), "None of the 2 label files"),
    (("a.nii.gz",), ("a.nii.gz", "a.mha"), "Two label files have the case name 'a'"),
])
def test_bad_folders_are_refused_by_name(tmp_path, names, labels, message):
    images = touch(tmp_path / "images", *names)
    label_folder = touch(tmp_path / "labels", *labels) if labels else None
    with pytest.raises(RecokdError, match=message):
        find_cases(images, label_folder, channels=1)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """Two small phantoms in nnU-Net raw format (imagesTr/labelsTr)."""
    return write_dataset(tmp_path_factory.mktemp("phantoms"), 2, config=PhantomConfig(shape=(24, 24, 24)))


def distill(tmp_path, images, *extra, teacher=PHANTOM_TEACHER):
    """Run ``recokd distill --images`` in-process; returns (exit status, work dir)."""
    work_dir = tmp_path / "work"
    status = main(["distill", "--teacher", str(teacher), "--images", str(images), "--work-dir", str(work_dir),
                   "--device", "cpu", "--progress", "none", "--no-export", *extra])
    return status, work_dir


def refused(tmp_path, capsys, images, *extra, teacher=PHANTOM_TEACHER) -> str:
    """The one-line error of a refused run, which must leave no work directory behind."""
    status, work_dir = distill(tmp_path, images, *extra, teacher=teacher)
    assert status == 2
    assert not work_dir.exists(), f"a refused run wrote {sorted(work_dir.rglob('*'))}"
    return capsys.readouterr().err


def copy_cases(phantoms, folder, labels: bool = False):
    """The phantoms' scans (and labels) copied into fresh folders: ``(images, labels or None)``."""
    images = folder / "images"
    images.mkdir(parents=True)
    for path in (phantoms / "imagesTr").iterdir():
        (images / path.name).write_bytes(path.read_bytes())
    if not labels:
        return images, None
    label_folder = folder / "labels"
    label_folder.mkdir()
    for path in (phantoms / "labelsTr").iterdir():
        (label_folder / path.name).write_bytes(path.read_bytes())
    return images, label_folder


def test_a_folder_without_readable_scans_is_refused_and_nothing_written(tmp_path, capsys):
    empty = touch(tmp_path / "empty", "readme.txt")
    assert "holds no scan" in refused(tmp_path, capsys, empty)
    broken = touch(tmp_path / "broken")
    (broken / "case.nii.gz").write_bytes(b"not an image")
    message = refused(tmp_path, capsys, broken)
    assert "Cannot read" in message and "case.nii.gz" in message


def test_scans_with_more_channels_than_the_teacher_takes_are_refused(tmp_path, capsys, phantoms):
    images = tmp_path / "images"
    images.mkdir()
    scan = sitk.ReadImage(str(phantoms / "imagesTr" / "phantom_000_0000.nii.gz"))
    sitk.WriteImage(sitk.JoinSeries([scan, scan]), str(images / "two_channels.nii.gz"))
    message = refused(tmp_path, capsys, images)
    assert "2 channel(s); the teacher takes 1" in message


def test_duplicate_case_names_are_refused(tmp_path, capsys, phantoms):
    images, _ = copy_cases(phantoms, tmp_path)
    (images / "phantom_000_0000.nrrd").write_bytes(b"")
    assert "case name 'phantom_000_0000'" in refused(tmp_path, capsys, images)


def test_labels_with_values_the_teacher_does_not_know_are_refused(tmp_path, capsys, phantoms):
    images, labels = copy_cases(phantoms, tmp_path, labels=True)
    label = sitk.ReadImage(str(labels / "phantom_001.nii.gz"))
    array = sitk.GetArrayFromImage(label)
    array[0, 0, :3] = 9
    changed = sitk.GetImageFromArray(array)
    changed.CopyInformation(label)
    sitk.WriteImage(changed, str(labels / "phantom_001.nii.gz"))
    message = refused(tmp_path, capsys, images, "--labels", str(labels))
    assert "phantom_001" in message and "value(s) [9]" in message and "does not know" in message


def test_labels_on_another_grid_than_their_scan_are_refused(tmp_path, capsys, phantoms):
    images, labels = copy_cases(phantoms, tmp_path, labels=True)
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkUInt8), str(labels / "phantom_000.nii.gz"))
    assert "voxel grid" in refused(tmp_path, capsys, images, "--labels", str(labels))


def test_a_teacher_package_whose_plans_lack_the_ct_statistics_is_refused(tmp_path, capsys, phantoms):
    model = load_package(PHANTOM_TEACHER)
    plans = {k: v for k, v in model.plans.items() if k != "foreground_intensity_properties_per_channel"}
    teacher = write_package(replace(model, plans=plans), tmp_path / "no-statistics.recokd.zip")
    images, _ = copy_cases(phantoms, tmp_path)
    message = refused(tmp_path, capsys, images, teacher=teacher)
    assert "CTNormalization" in message and "foreground_intensity_properties_per_channel['0']" in message


def test_a_teacher_reading_images_with_another_reader_is_refused(tmp_path, capsys, phantoms):
    model = load_package(PHANTOM_TEACHER)
    teacher = write_package(replace(model, plans=model.plans | {"image_reader_writer": "NibabelIOWithReorient"}),
                            tmp_path / "nibabel.recokd.zip")
    images, _ = copy_cases(phantoms, tmp_path)
    assert "NibabelIOWithReorient" in refused(tmp_path, capsys, images, teacher=teacher)


def test_one_scan_needs_fold_all(tmp_path, capsys, phantoms):
    images, _ = copy_cases(phantoms, tmp_path)
    (images / "phantom_001_0000.nii.gz").unlink()
    assert "--fold all" in refused(tmp_path, capsys, images)


def test_dataset_and_images_exclude_each_other(tmp_path, capsys, phantoms):
    assert "not both or neither" in refused(tmp_path, capsys, phantoms / "imagesTr", "--dataset", "4")
    status = main(["distill", "--teacher", str(PHANTOM_TEACHER), "--work-dir", str(tmp_path / "work"),
                   "--progress", "none"])
    assert status == 2 and "not both or neither" in capsys.readouterr().err


def test_labels_alone_are_refused(tmp_path, capsys, phantoms):
    status = main(["distill", "--teacher", str(PHANTOM_TEACHER), "--dataset", "4", "--labels",
                   str(phantoms / "labelsTr"), "--work-dir", str(tmp_path / "work"), "--progress", "none"])
    assert status == 2 and "--labels, --soft-target-weight, --labeled-share and --prepare-only go with --images" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()



def test_dicom_series_folders_are_cases_and_a_ct_teacher_refuses_an_mr_series(tmp_path, capsys, phantoms):
    scan = sitk.Cast(sitk.ReadImage(str(phantoms / "imagesTr" / "phantom_000_0000.nii.gz")), sitk.sitkInt16)
    images, _ = copy_cases(phantoms, tmp_path)
    write_dicom_series(images / "patient_ct", scan, f"{UID_ROOT}.9.1", "AX CT")
    cases = find_cases(images, None, channels=1)
    assert [c.name for c in cases] == ["patient_ct", "phantom_000", "phantom_001"]
    check_scans(cases, read_teacher(PHANTOM_TEACHER))
    write_dicom_series(images / "patient_mr", scan, f"{UID_ROOT}.9.2", "AX T1", modality="MR")
    message = refused(tmp_path, capsys, images)
    assert "patient_mr is a MR series; the teacher takes CT" in message


def test_a_dicom_series_is_preprocessed_like_the_same_scan_as_nifti(tmp_path, monkeypatch, phantoms):
    """No prediction: with labels for every case, only reading and nnU-Net's preprocessing run."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, "")
    scan = sitk.Cast(sitk.ReadImage(str(phantoms / "imagesTr" / "phantom_000_0000.nii.gz")), sitk.sitkInt16)
    images, labels = tmp_path / "images", tmp_path / "labels"
    sitk.WriteImage(scan, str(touch(images) / "nifti.nii.gz"))
    write_dicom_series(images / "dicom", scan, f"{UID_ROOT}.9.3", "AX CT")
    label = sitk.ReadImage(str(phantoms / "labelsTr" / "phantom_000.nii.gz"))
    for name in ("nifti", "dicom"):
        sitk.WriteImage(label, str(touch(labels) / f"{name}.nii.gz"))
    workspace = Workspace.under(tmp_path / "work", respect_environment=False).activate()
    teacher = load_teacher(read_teacher(PHANTOM_TEACHER).results_folder(workspace.root))
    dataset = build_scans_dataset(workspace, images, find_cases(images, labels, 1),
                                  TeacherLabeller(teacher, torch.device("cpu")))
    assert dataset.labeled == ("dicom", "nifti") and dataset.predicted == 0
    data = dataset.folder / "nnUNetPlans_3d_fullres"
    nifti, dicom = (blosc2.open(str(data / f"{name}.b2nd"), mode="r")[:] for name in ("nifti", "dicom"))
    assert nifti.shape == dicom.shape and np.allclose(nifti, dicom, atol=1e-4)
