"""Command lines built from the panels' parameters, the models list, and the install command.
Needs no MRML."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from bridge_support import REPO
from ReCoKDSegmentLib.commands import (
    DistillParameters,
    SegmentParameters,
    distill_command,
    models_add_command,
    models_list_command,
    parse_models_list,
    python_executable,
    recokd_launcher,
    segment_command,
)
from ReCoKDSegmentLib.dependencies import (
    bundled_models_environment,
    bundled_version,
    constraints_text,
    find_bundled_models,
    find_training_package,
    installed_versions,
    pip_install_command,
    stage_training_package,
)

LAUNCHER = ["/slicer/bin/PythonSlicer", "-m", "recokd"]


def test_segment_command():
    parameters = SegmentParameters("abdomen-quarter", Path("/tmp/in.nrrd"), Path("/tmp/out.nii.gz"), "cpu", fast=True,
                                   backend="openvino")
    assert segment_command(LAUNCHER, parameters) == [
        "/slicer/bin/PythonSlicer", "-m", "recokd", "segment", "-m", "abdomen-quarter",
        "-i", "/tmp/in.nrrd", "-o", "/tmp/out.nii.gz", "--device", "cpu", "--backend", "openvino", "--fast",
        "--progress", "json", "--overwrite",
    ]
    accurate = SegmentParameters("/models/a.recokd.zip", Path("in"), Path("out"))
    assert "--fast" not in segment_command(LAUNCHER, accurate)
    assert segment_command(LAUNCHER, accurate)[-7:] == [
        "--device", "auto", "--backend", "auto", "--progress", "json", "--overwrite"]


@pytest.mark.parametrize(("change", "message"), [
    ({"device": "gpu"}, "device"), ({"backend": "tensorrt"}, "backend"), ({"model": " "}, "choose a model")])
def test_segment_parameters_are_checked(change, message):
    with pytest.raises(ValueError, match=message):
        SegmentParameters(**{"model": "m", "input": Path("i"), "output": Path("o"), **change})


DISTILL = DistillParameters(
    teacher=Path("/data/nnUNet_results/Dataset990_Phantom/nnUNetTrainer__nnUNetPlans__3d_fullres"),
    dataset="990",
    work_dir=Path("/work/distill"),
    width="1/4",
    fold=0,
    epochs=50,
    mode="recokd",
    ms_ca="gc",
    kd_weight=0.01,
    device="cuda",
)
DISTILL_ARGUMENTS = [
    "distill",
    "--teacher", "/data/nnUNet_results/Dataset990_Phantom/nnUNetTrainer__nnUNetPlans__3d_fullres",
    "--dataset", "990", "--width", "1/4", "--fold", "0", "--epochs", "50", "--mode", "recokd",
    "--ms-ca", "gc", "--kd-weight", "0.01", "--device", "cuda", "--work-dir", "/work/distill",
    "--progress", "json",
]


def test_distill_command_on_one_device():
    assert distill_command(LAUNCHER, DISTILL) == [*LAUNCHER, *DISTILL_ARGUMENTS]


def test_resume_adds_the_flag():
    command = distill_command(LAUNCHER, DistillParameters(**{**DISTILL.__dict__, "resume": True}))
    assert command[-3:] == ["--resume", "--progress", "json"]


def test_distill_command_from_scans_with_and_without_labels():
    scans = DistillParameters(**{**DISTILL.__dict__, "dataset": "", "images": Path("/data/scans")})
    arguments = distill_command(LAUNCHER, scans)[len(LAUNCHER):]
    assert arguments[:5] == ["distill", "--teacher", DISTILL_ARGUMENTS[2], "--images", "/data/scans"]
    assert "--dataset" not in arguments and "--labels" not in arguments
    labelled = DistillParameters(**{**scans.__dict__, "labels": Path("/data/labels")})
    arguments = distill_command(LAUNCHER, labelled)[len(LAUNCHER):]
    assert arguments[3:7] == ["--images", "/data/scans", "--labels", "/data/labels"]


def test_distill_command_with_several_gpus_uses_torchrun():
    command = distill_command(LAUNCHER, DistillParameters(**{**DISTILL.__dict__, "gpus": 4}))
    assert command == [
        "/slicer/bin/PythonSlicer", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4",
        "-m", "recokd", *DISTILL_ARGUMENTS,
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"teacher": Path("")}, "teacher"),
        ({"dataset": ""}, "dataset"),
        ({"images": Path("/data/scans")}, "either a dataset or a scans folder"),
        ({"dataset": "", "images": Path(".")}, "folder of scans"),
        ({"labels": Path("/data/labels")}, "labels folder goes with a scans folder"),
        ({"dataset": "", "images": Path("/data/scans"), "labels": Path("")}, "labels folder, or learn"),
        ({"work_dir": Path(".")}, "work folder"),
        ({"width": "1/3"}, "student width"),
        ({"mode": "fitnet"}, "KD mode"),
        ({"ms_ca": "both"}, "MS-CA"),
        ({"epochs": 0}, "epochs"),
        ({"kd_weight": -1.0}, "KD weight"),
        ({"gpus": 2, "device": "cpu"}, "several GPUs"),
        ({"gpus": 0}, "GPU count"),
    ],
)
def test_distill_parameters_are_checked(change, message):
    with pytest.raises(ValueError, match=message):
        DistillParameters(**{**DISTILL.__dict__, **change})


def test_models_commands_and_list():
    assert models_list_command(LAUNCHER) == [*LAUNCHER, "models", "list", "--json"]
    assert models_add_command(LAUNCHER, Path("/d/s.recokd.zip")) == [*LAUNCHER, "models", "add", "/d/s.recokd.zip"]
    assert models_add_command(LAUNCHER, Path("/d/s.recokd.zip"), overwrite=True)[-1] == "--overwrite"
    label = {"value": 1, "name": "Liver", "color": [221, 130, 101],
             "category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
             "type": {"scheme": "SCT", "code": "10200004", "meaning": "Liver"}, "modifier": None, "custom": False}
    text = json.dumps([{"name": "phantom", "path": "/m/phantom", "labels": [label], "description": "toy"}], indent=2)
    (model,) = parse_models_list(text.splitlines())
    assert (model.name, model.path, model.description, model.labels[0].name) == ("phantom", "/m/phantom", "toy", "Liver")
    assert parse_models_list(["[]"]) == []
    with pytest.raises(ValueError, match="not JSON"):
        parse_models_list(["Traceback (most recent call last):"])


def test_launcher_defaults_to_a_python_interpreter():
    python, flag, module = recokd_launcher()
    assert (flag, module) == ("-m", "recokd")
    assert Path(python).exists()


def test_constraints_pin_installed_packages_only():
    text = constraints_text({"SimpleITK": "2.4.0", "requests": "2.32.3", "torch": None})
    assert text == "SimpleITK==2.4.0\nrequests==2.32.3\n"
    versions = installed_versions(["numpy", "surely-not-installed-package"])
    assert versions["surely-not-installed-package"] is None
    assert re.match(r"\d+\.\d+", versions["numpy"])


def test_inside_the_slicer_application_without_pythonslicer_the_launcher_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no PythonSlicer on it
    monkeypatch.setattr(sys, "executable", "/opt/Slicer-5.10.0/bin/SlicerApp-real")
    with pytest.raises(FileNotFoundError, match="PythonSlicer executable not found"):
        python_executable()
    python_slicer = tmp_path / "PythonSlicer"
    python_slicer.write_text("#!/bin/sh\n")
    python_slicer.chmod(0o755)
    assert python_executable() == str(python_slicer)
    monkeypatch.setattr(sys, "executable", "/usr/bin/python3.12")
    python_slicer.unlink()
    assert python_executable() == "/usr/bin/python3.12"  # a plain Python (tests, the console API outside Slicer)


def test_pip_command_installs_the_package_folder_with_its_cpu_runtime_under_the_constraints():
    assert pip_install_command("/py", Path("/stage/ReCoKDTraining"), Path("/stage/c.txt")) == [
        "/py", "-m", "pip", "install", "--upgrade", "--disable-pip-version-check",
        "-c", "/stage/c.txt", "/stage/ReCoKDTraining[openvino]",
    ]
    assert re.search(r'^openvino = \[\s*"openvino>=', (REPO / "ReCoKDTraining" / "pyproject.toml").read_text(), re.M)


def test_the_bundled_training_package_is_found_and_versioned(tmp_path):
    package = find_training_package(REPO / "ReCoKDSegment")
    assert package == REPO / "ReCoKDTraining"
    init = (package / "recokd" / "__init__.py").read_text()
    assert f'__version__ = "{bundled_version(package)}"' in init
    assert find_training_package(tmp_path / "module") is None


def test_the_bundled_models_are_offered_to_recokd_unless_the_user_chose_a_folder(tmp_path):
    installed = tmp_path / "modules" / "ReCoKDSegment"
    (installed.parent / "ReCoKDModels").mkdir(parents=True)  # an installed extension: next to the module
    assert find_bundled_models(installed.parent) == installed.parent / "ReCoKDModels"
    checkout = tmp_path / "checkout"
    (checkout / "Resources" / "Models").mkdir(parents=True)  # a source checkout: the top-level folder
    assert find_bundled_models(checkout / "ReCoKDSegment") == checkout / "Resources" / "Models"
    assert find_bundled_models(tmp_path / "nowhere") is None
    assert bundled_models_environment(installed.parent, {}) == {
        "RECOKD_BUNDLED_MODELS_DIR": str(installed.parent / "ReCoKDModels")}
    assert bundled_models_environment(installed.parent, {"RECOKD_BUNDLED_MODELS_DIR": "/mine"}) == {}
    assert bundled_models_environment(tmp_path / "nowhere", {}) == {}


def test_staging_copies_the_package_without_build_leftovers(tmp_path):
    source = tmp_path / "src" / "ReCoKDTraining"
    (source / "recokd").mkdir(parents=True)
    (source / "pyproject.toml").write_text("[project]\nreadme = 'README.md'\n")
    (source / "README.md").write_text("read me")
    (source / "recokd" / "__init__.py").write_text('__version__ = "9.9"\n')
    (source / "recokd.egg-info").mkdir()
    (source / "recokd" / "__pycache__").mkdir()

    staged = stage_training_package(source, tmp_path / "stage")

    assert staged == tmp_path / "stage" / "ReCoKDTraining"
    assert (staged / "pyproject.toml").is_file() and bundled_version(staged) == "9.9"
    assert not (staged / "recokd.egg-info").exists() and not (staged / "recokd" / "__pycache__").exists()
    assert (staged / "README.md").read_text() == "read me"
