"""plan_jobs: which output for which input, and everything refused before the model is loaded."""

from __future__ import annotations

import pytest
from tiny_student import UID_ROOT, oblique_volume, write_dicom_series, write_volume

from recokd.errors import RecokdError
from recokd.inference.jobs import SegmentJob, plan_jobs


@pytest.fixture()
def volume():
    return oblique_volume(size_xyz=(8, 8, 4), spacing=(1.0, 1.0, 2.0))


def test_single_file_to_a_named_file_or_into_a_folder(tmp_path, volume):
    source = write_volume(volume, tmp_path / "ct_01.nii.gz")
    assert plan_jobs(source, tmp_path / "out" / "labels.seg.nrrd") == [
        SegmentJob(source, tmp_path / "out" / "labels.seg.nrrd")
    ]
    assert (tmp_path / "out").is_dir()
    assert plan_jobs(source, tmp_path / "out2", "seg.nrrd") == [SegmentJob(source, tmp_path / "out2" / "ct_01.seg.nrrd")]
    assert plan_jobs(source, tmp_path / "out3") == [SegmentJob(source, tmp_path / "out3" / "ct_01.nii.gz")]


def test_a_folder_of_images_is_a_sorted_batch_without_label_files(tmp_path, volume):
    (tmp_path / "in").mkdir()
    for name in ("b.mha", "a.nii.gz", "c.nrrd"):
        write_volume(volume, tmp_path / "in" / name)
    (tmp_path / "in" / "old.seg.nrrd").write_bytes(b"")
    (tmp_path / "in" / "notes.txt").write_text("x")
    jobs = plan_jobs(tmp_path / "in", tmp_path / "out")
    assert [(j.input.name, j.output.name) for j in jobs] == [
        ("a.nii.gz", "a.nii.gz"), ("b.mha", "b.nii.gz"), ("c.nrrd", "c.nii.gz")
    ]


def test_a_dicom_folder_is_one_job_named_after_the_folder(tmp_path, volume):
    write_dicom_series(tmp_path / "series7", volume, f"{UID_ROOT}.3.1", "AX")
    assert plan_jobs(tmp_path / "series7", tmp_path / "out") == [
        SegmentJob(tmp_path / "series7", tmp_path / "out" / "series7.nii.gz")
    ]


@pytest.mark.parametrize(
    "output, fmt, message",
    [
        ("out/x.seg.nrrd", "nii.gz", "does not match"),
        ("out/x.nrrd", None, "written as .nii.gz or .seg.nrrd"),
        ("out/x.nii", None, "written as .nii.gz or .seg.nrrd"),
    ],
)
def test_output_names_and_format_must_agree(tmp_path, volume, output, fmt, message):
    source = write_volume(volume, tmp_path / "ct.nii.gz")
    with pytest.raises(RecokdError, match=message):
        plan_jobs(source, tmp_path / output, fmt)


def test_batch_needs_an_output_folder(tmp_path, volume):
    (tmp_path / "in").mkdir()
    write_volume(volume, tmp_path / "in" / "a.nii.gz")
    with pytest.raises(RecokdError, match="must be a folder"):
        plan_jobs(tmp_path / "in", tmp_path / "out.nii.gz")


def test_series_is_only_for_dicom_folders(tmp_path, volume):
    (tmp_path / "in").mkdir()
    source = write_volume(volume, tmp_path / "in" / "a.nii.gz")
    for path in (tmp_path / "in", source):
        with pytest.raises(RecokdError, match="--series selects a series of a DICOM folder"):
            plan_jobs(path, tmp_path / "out", series="1.2.3")


def test_empty_folder_and_missing_input_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecokdError, match="no DICOM series and no images"):
        plan_jobs(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(RecokdError, match="Input not found"):
        plan_jobs(tmp_path / "missing.nii.gz", tmp_path / "out")


def test_two_inputs_writing_one_output_are_refused(tmp_path, volume):
    (tmp_path / "in").mkdir()
    write_volume(volume, tmp_path / "in" / "a.nii.gz")
    write_volume(volume, tmp_path / "in" / "a.mha")
    with pytest.raises(RecokdError, match="would both be written"):
        plan_jobs(tmp_path / "in", tmp_path / "out")


def test_output_replacing_its_input_is_refused_even_with_overwrite(tmp_path, volume):
    source = write_volume(volume, tmp_path / "ct.nii.gz")
    with pytest.raises(RecokdError, match="replace its own input"):
        plan_jobs(source, source, overwrite=True)


def test_existing_outputs_are_listed_unless_overwrite(tmp_path, volume):
    source = write_volume(volume, tmp_path / "ct.nii.gz")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "ct.nii.gz").write_bytes(b"old")
    with pytest.raises(RecokdError, match=r"already exists: .*ct.nii.gz. Pass --overwrite"):
        plan_jobs(source, tmp_path / "out")
    assert plan_jobs(source, tmp_path / "out", overwrite=True)[0].output == tmp_path / "out" / "ct.nii.gz"


def test_an_output_folder_that_cannot_be_created_is_refused(tmp_path, volume):
    source = write_volume(volume, tmp_path / "ct.nii.gz")
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(RecokdError, match="Cannot write to the output folder"):
        plan_jobs(source, tmp_path / "afile" / "out")
