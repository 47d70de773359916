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
        ("out/x.nrrd", "seg.nrrd", "does not match"),
        ("out/x.gz", None, "written as .nii.gz, .seg.nrrd, .nrrd, .nii, .mha"),
        ("out/x.mhd", None, "written as"),
    ],
)
def test_output_names_and_format_must_agree(tmp_path, volume, output, fmt, message):
    source = write_volume(volume, tmp_path / "ct.nii.gz")
    with pytest.raises(RecokdError, match=message):
        plan_jobs(source, tmp_path / output, fmt)


@pytest.mark.parametrize("name", ["labels.nrrd", "labels.nii", "labels.mha", "labels.seg.nrrd", "labels.nii.gz"])
def test_every_label_format_is_a_file_output(tmp_path, volume, name):
    source = write_volume(volume, tmp_path / "ct.nii.gz")
    assert plan_jobs(source, tmp_path / name) == [SegmentJob(source, tmp_path / name)]


def _batch(folder, volume, count: int) -> None:
    folder.mkdir()
    for index in range(count):
        write_volume(volume, folder / f"case_{index:02d}.nii.gz")


def test_parts_take_every_nth_sorted_input_and_together_cover_every_case_once(tmp_path, volume):
    _batch(tmp_path / "in", volume, 7)
    parts = [plan_jobs(tmp_path / "in", tmp_path / "out", "nrrd", part=k, num_parts=3) for k in range(3)]
    names = [[job.input.name for job in part] for part in parts]
    assert names[0] == ["case_00.nii.gz", "case_03.nii.gz", "case_06.nii.gz"]  # every 3rd, from the k-th
    assert sorted(sum(names, [])) == [f"case_{i:02d}.nii.gz" for i in range(7)]
    assert all(job.output.suffix == ".nrrd" for part in parts for job in part)
    assert plan_jobs(tmp_path / "in", tmp_path / "out", "nrrd", part=2, num_parts=3) == parts[2]  # deterministic
    assert plan_jobs(tmp_path / "in", tmp_path / "out", part=7, num_parts=9) == []  # more parts than cases


@pytest.mark.parametrize("part, num_parts", [(3, 3), (-1, 2), (0, 0)])
def test_a_part_outside_the_parts_is_refused(tmp_path, volume, part, num_parts):
    source = write_volume(volume, tmp_path / "ct.nii.gz")
    with pytest.raises(RecokdError, match="--part"):
        plan_jobs(source, tmp_path / "out", part=part, num_parts=num_parts)


def test_continue_skips_the_written_outputs_and_only_them(tmp_path, volume):
    _batch(tmp_path / "in", volume, 4)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "case_01.nii.gz").write_bytes(b"done before")
    with pytest.raises(RecokdError, match="already exists"):
        plan_jobs(tmp_path / "in", tmp_path / "out")
    jobs = plan_jobs(tmp_path / "in", tmp_path / "out", continue_existing=True)
    assert [job.input.name for job in jobs] == ["case_00.nii.gz", "case_02.nii.gz", "case_03.nii.gz"]
    with pytest.raises(RecokdError, match="contradict"):
        plan_jobs(tmp_path / "in", tmp_path / "out", overwrite=True, continue_existing=True)


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
