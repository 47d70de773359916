"""``recokd segment`` end to end: JSON lines, batches, refusals with exit 2, and stopping on signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from tiny_student import UID_ROOT, oblique_volume, tiny_package, write_dicom_series, write_volume

from recokd.cli import main
from recokd.package.archive import write_package


@pytest.fixture(scope="module")
def package_file(tmp_path_factory) -> Path:
    return write_package(tiny_package(seed=0), tmp_path_factory.mktemp("model") / "tiny.recokd.zip")


@pytest.fixture()
def volume():
    return oblique_volume(size_xyz=(20, 16, 10), spacing=(1.2, 0.9, 2.0))


def _segment(package_file: Path, *args: str) -> list[str]:
    return ["segment", "-m", str(package_file), "--device", "cpu", "--threads", "1", "--fast", *args]


def _subprocess(argv: list[str]) -> subprocess.Popen:
    """``python -m recokd ...`` as a GUI would start it, output captured as text."""
    return subprocess.Popen([sys.executable, "-m", "recokd", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _events(stdout: str) -> list[dict]:
    """Every stdout line must be one JSON object."""
    return [json.loads(line) for line in stdout.splitlines()]


def test_json_progress_lines_parse_rise_and_end_with_the_result(package_file, volume, tmp_path):
    source = write_volume(volume, tmp_path / "ct.nii.gz")
    target = tmp_path / "out" / "ct.seg.nrrd"
    process = _subprocess(_segment(package_file, "-i", str(source), "-o", str(target), "--progress", "json"))
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    events = _events(stdout)
    progress, result = events[:-1], events[-1]
    assert all(set(e) == {"event", "stage", "fraction", "message"} and e["event"] == "progress" for e in progress)
    fractions = [e["fraction"] for e in progress]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert [e["stage"] for e in progress][0] == "loading" and progress[-1]["stage"] == "writing"
    assert set(result) == {"event", "outputs", "labels"} and result["event"] == "result"
    (output,) = result["outputs"]
    assert output["input"] == str(source) and output["output"] == str(target) and output["seconds"] > 0
    assert [label["name"] for label in result["labels"]] == ["liver", "kidney"]
    labels, image = sitk.ReadImage(str(target)), sitk.ReadImage(str(source))
    assert labels.GetSize() == image.GetSize()
    for get in ("GetSpacing", "GetOrigin", "GetDirection"):  # NRRD stores geometry as decimal text
        np.testing.assert_allclose(getattr(labels, get)(), getattr(image, get)(), rtol=1e-12, atol=1e-12)
    assert labels.GetMetaData("Segment0_Name") == "liver"


def test_a_folder_is_a_batch_with_a_summary(package_file, volume, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    for name in ("a.nii.gz", "b.mha"):
        write_volume(volume, tmp_path / "in" / name)
    code = main(_segment(package_file, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--progress", "bar"))
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "b.nii.gz"]
    captured = capsys.readouterr()
    assert "writing" in captured.err and "100%" in captured.err  # the tqdm bar, on stderr
    summary = captured.out
    assert "Segmented 2 volume(s)" in summary
    for name in ("a.nii.gz", "b.mha"):
        line = next(line for line in summary.splitlines() if line.strip().startswith(name))
        assert " s " in line and "peak RSS" in line


def test_a_job_array_of_parts_segments_every_case_once_and_continue_redoes_only_the_missing(
        package_file, volume, tmp_path, capsys):
    """Two ``--part K --num-parts 2`` processes run at once, as a SLURM array's tasks would (both exporting the
    model for the default CPU runtime into one cache at the same moment); then one case is lost and a
    ``--continue`` rerun of its part writes only that one."""
    (tmp_path / "in").mkdir()
    for index in range(5):
        write_volume(volume, tmp_path / "in" / f"case_{index}.nii.gz")
    common = _segment(package_file, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--format", "nrrd",
                      "--num-parts", "2", "--progress", "json")
    tasks = [_subprocess([*common, "--part", str(k)]) for k in range(2)]
    results = [_events(task.communicate(timeout=300)[0])[-1] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0]
    done = [[Path(case["input"]).name for case in result["outputs"]] for result in results]
    assert done == [["case_0.nii.gz", "case_2.nii.gz", "case_4.nii.gz"], ["case_1.nii.gz", "case_3.nii.gz"]]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [f"case_{i}.nrrd" for i in range(5)]

    first = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "case_2.nrrd")))
    (tmp_path / "out" / "case_2.nrrd").unlink()
    case_0 = (tmp_path / "out" / "case_0.nrrd").stat().st_mtime_ns
    assert main([*common, "--part", "0", "--continue"]) == 0
    outputs = _events(capsys.readouterr().out)[-1]["outputs"]
    assert [Path(case["output"]).name for case in outputs] == ["case_2.nrrd"]
    assert (tmp_path / "out" / "case_0.nrrd").stat().st_mtime_ns == case_0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "case_2.nrrd"))), first)
    assert main([*common, "--part", "0", "--continue"]) == 0  # nothing left: done, with an empty result
    assert _events(capsys.readouterr().out)[-1]["outputs"] == []


@pytest.mark.parametrize("suffix", [".nrrd", ".nii", ".mha"])
def test_a_plain_label_map_format_holds_the_same_labels(package_file, volume, tmp_path, suffix):
    source = write_volume(volume, tmp_path / "ct.nii.gz")
    for name in ("reference.nii.gz", f"labels{suffix}"):
        assert main(_segment(package_file, "-i", str(source), "-o", str(tmp_path / name), "--progress", "none",
                             "--backend", "torch")) == 0
    reference, labels = (sitk.ReadImage(str(tmp_path / name)) for name in ("reference.nii.gz", f"labels{suffix}"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(reference))
    assert labels.GetSpacing() == pytest.approx(volume.GetSpacing()) and labels.GetPixelID() == sitk.sitkUInt8


def test_resampling_flag_picks_the_path_back_to_the_input_grid(package_file, volume, tmp_path, monkeypatch, capsys):
    from recokd.inference import label_map

    def torch_path(*args, **kwargs):
        raise RuntimeError("the PyTorch resampling ran")

    monkeypatch.setattr(label_map, "resampling_steps", torch_path)
    source = write_volume(volume, tmp_path / "ct.nii.gz")
    common = _segment(package_file, "-i", str(source), "--progress", "none", "--backend", "torch")
    assert main([*common, "-o", str(tmp_path / "nnunet.nii.gz"), "--resampling", "nnunet"]) == 0
    with pytest.raises(RuntimeError, match="the PyTorch resampling ran"):  # the default
        main([*common, "-o", str(tmp_path / "torch.nii.gz")])
    with pytest.raises(SystemExit):
        main([*common, "-o", str(tmp_path / "other.nii.gz"), "--resampling", "cubic"])
    assert "invalid choice: 'cubic'" in capsys.readouterr().err


def test_batch_json_result_lists_every_case(package_file, volume, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        write_volume(volume, tmp_path / "in" / name)
    code = main(_segment(package_file, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                         "--progress", "json", "--format", "seg.nrrd"))
    assert code == 0
    events = _events(capsys.readouterr().out)
    assert [Path(o["output"]).name for o in events[-1]["outputs"]] == ["a.seg.nrrd", "b.seg.nrrd"]
    fractions = [e["fraction"] for e in events[:-1]]
    assert fractions == sorted(fractions)
    assert max(f for f, e in zip(fractions, events) if e["message"].startswith("wrote") and "a.seg" in e["message"]) \
        == pytest.approx(0.5)


def test_existing_output_is_refused_then_replaced_with_overwrite(package_file, volume, tmp_path, capsys):
    source = write_volume(volume, tmp_path / "ct.nii.gz")
    target = tmp_path / "labels.nii.gz"
    target.write_bytes(b"previous result")
    assert main(_segment(package_file, "-i", str(source), "-o", str(target), "--progress", "json")) == 2
    assert "--overwrite" in _events(capsys.readouterr().out)[-1]["message"]
    assert target.read_bytes() == b"previous result"
    assert main(_segment(package_file, "-i", str(source), "-o", str(target), "--progress", "none", "--overwrite")) == 0
    assert sitk.ReadImage(str(target)).GetSize() == volume.GetSize()


def _bad_input(kind: str, folder: Path, volume: sitk.Image) -> Path:
    """Write the bad input ``kind`` into ``folder`` and return the path to give ``-i``."""
    if kind == "2d image":
        return write_volume(volume[:, :, 3], folder / "slice.nii.gz")
    if kind == "4d with two channels":
        return write_volume(sitk.JoinSeries([volume, volume]), folder / "two.nii.gz")
    if kind == "empty volume":
        path = folder / "empty.mha"
        path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 10 10 0\nElementType = MET_SHORT\n"
                        "ElementDataFile = LOCAL\n")
        return path
    if kind in ("all nan", "some inf", "nan in nrrd"):
        array = sitk.GetArrayFromImage(volume).astype(np.float32)
        if kind == "all nan":
            array[:] = np.nan
        else:
            array[2, 3, 4] = np.inf if kind == "some inf" else np.nan
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(volume)
        return write_volume(image, folder / ("float.nrrd" if kind == "nan in nrrd" else "float.nii.gz"))
    if kind == "truncated nifti":
        data = write_volume(volume, folder / "whole.nii.gz").read_bytes()
        (folder / "whole.nii.gz").unlink()
        (folder / "cut.nii.gz").write_bytes(data[: len(data) // 2])
        return folder / "cut.nii.gz"
    if kind == "missing path":
        return folder / "does_not_exist.nii.gz"
    if kind == "two dicom series":
        write_dicom_series(folder / "dicom", volume, f"{UID_ROOT}.5.1", "AX")
        write_dicom_series(folder / "dicom", volume[:, :, :4], f"{UID_ROOT}.5.2", "SAG")
        return folder / "dicom"
    raise AssertionError(kind)


BAD_INPUTS = {
    "2d image": "2D",
    "4d with two channels": "takes 1 input channel",
    "empty volume": "empty",
    "all nan": "Every voxel",
    "some inf": "1 of 3200 voxels are NaN or infinite",
    "nan in nrrd": "1 of 3200 voxels are NaN or infinite",
    "truncated nifti": "cut short",
    "missing path": "Input not found",
    "two dicom series": "--series UID",
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_message_and_writes_nothing(package_file, volume, tmp_path, capsys, kind):
    (tmp_path / "in").mkdir()
    source = _bad_input(kind, tmp_path / "in", volume)
    code = main(_segment(package_file, "-i", str(source), "-o", str(tmp_path / "out"), "--progress", "json"))
    captured = capsys.readouterr()
    assert code == 2
    (error,) = [e for e in _events(captured.out) if e["event"] == "error"]
    assert BAD_INPUTS[kind] in error["message"]
    assert captured.err.strip().splitlines()[-1] == f"recokd segment: error: {error['message']}"
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_unwritable_output_folder_exits_2(package_file, volume, tmp_path, capsys):
    source = write_volume(volume, tmp_path / "ct.nii.gz")
    (tmp_path / "afile").write_text("a file, not a folder")
    assert main(_segment(package_file, "-i", str(source), "-o", str(tmp_path / "afile" / "out"))) == 2
    assert "Cannot write to the output folder" in capsys.readouterr().err


def test_unknown_model_exits_2(volume, tmp_path, capsys):
    source = write_volume(volume, tmp_path / "ct.nii.gz")
    code = main(["segment", "-m", "no-such-model", "--models-dir", str(tmp_path / "models"),
                 "-i", str(source), "-o", str(tmp_path / "out")])
    assert code == 2
    assert "No model named 'no-such-model'" in capsys.readouterr().err


def test_a_chosen_dicom_series_is_segmented(package_file, volume, tmp_path, capsys):
    write_dicom_series(tmp_path / "dicom", volume, f"{UID_ROOT}.6.1", "AX")
    write_dicom_series(tmp_path / "dicom", volume[:, :, :4], f"{UID_ROOT}.6.2", "SAG")
    code = main(_segment(package_file, "-i", str(tmp_path / "dicom"), "-o", str(tmp_path / "out"),
                         "--series", f"{UID_ROOT}.6.2", "--progress", "none"))
    assert code == 0
    assert sitk.ReadImage(str(tmp_path / "out" / "dicom.nii.gz")).GetSize() == (*volume.GetSize()[:2], 4)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_prediction_stops_without_partial_output(package_file, tmp_path, signum, code):
    large = oblique_volume(size_xyz=(48, 48, 48), spacing=(1.0, 1.0, 1.0))  # mirrored: many seconds of tiles
    source = write_volume(large, tmp_path / "ct.nii.gz")
    (tmp_path / "out").mkdir()
    argv = ["segment", "-m", str(package_file), "--device", "cpu", "--threads", "1", "-i", str(source),
            "-o", str(tmp_path / "out" / "ct.seg.nrrd"), "--progress", "json"]
    process = _subprocess(argv)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if json.loads(line)["message"].startswith("tile "):
            process.send_signal(signum)
            break
    rest, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    events = _events("".join(lines) + rest)
    assert events[-1]["event"] == "error" and signal.Signals(signum).name in events[-1]["message"]
    assert not any(e["event"] == "result" for e in events)
    done, total = map(int, [e for e in events if e["message"].startswith("tile ")][-1]["message"][5:].split("/"))
    assert done < total  # stopped between tiles, long before the end
    assert list((tmp_path / "out").iterdir()) == []
    assert stderr.strip().splitlines()[-1].startswith("recokd segment: stopped by")
