"""The installed models folder: default location, add, list, remove, resolve."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tiny_results import CONFIGURATION, phantom_dataset_json, plans_for, seeded_weights, student_result

from recokd.errors import RecokdError
from recokd.package import registry
from recokd.package.archive import write_package
from recokd.package.export import export_package
from recokd.package.model import ModelPackage
from recokd.package.registry import (
    default_models_dir,
    install_model,
    list_models,
    model_file_name,
    remove_model,
    resolve_model,
)
from recokd.package.terminology import default_label_infos


@pytest.fixture(scope="module")
def package_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    return export_package(student_result(root), root / "student.recokd.zip", name="Tiny student")


def test_models_dir_environment_variable_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("RECOKD_MODELS_DIR", str(tmp_path / "m"))
    assert default_models_dir() == tmp_path / "m"


@pytest.mark.parametrize(("platform", "env", "expected"), [
    ("linux", {"XDG_DATA_HOME": "/xdg"}, Path("/xdg/recokd/models")),
    ("linux", {}, Path("/home/u/.local/share/recokd/models")),
    ("darwin", {}, Path("/home/u/Library/Application Support/recokd/models")),
    ("win32", {"LOCALAPPDATA": "/appdata"}, Path("/appdata/recokd/models")),
])
def test_platform_default_models_dir(monkeypatch, platform, env, expected):
    for name in ("RECOKD_MODELS_DIR", "XDG_DATA_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(Path, "home", lambda: Path("/home/u"))
    assert default_models_dir() == expected


def test_add_list_resolve_remove(tmp_path, package_file):
    folder = tmp_path / "models"
    assert list_models(folder) == []
    model = install_model(package_file, folder)
    assert (model.name, model.path) == ("Tiny_student", folder / "Tiny_student.recokd.zip")
    [listed] = list_models(folder)
    assert listed == model and listed.error is None
    assert [label.name for label in listed.labels][:2] == ["liver", "kidney_left"]
    assert listed.to_dict().keys() == {"name", "path", "labels", "description", "bundled"}
    assert resolve_model("Tiny_student", folder) == model.path
    assert resolve_model(package_file, folder) == package_file
    assert remove_model("Tiny_student", folder) == model.path
    assert list_models(folder) == []
    assert sorted(p.name for p in folder.iterdir()) == []  # no temporary files left


def test_installing_twice_needs_overwrite(tmp_path, package_file):
    install_model(package_file, tmp_path)
    with pytest.raises(RecokdError, match="already installed.*--overwrite"):
        install_model(package_file, tmp_path)
    install_model(package_file, tmp_path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["Tiny_student.recokd.zip"]


def test_invalid_packages_are_not_installed(tmp_path, package_file):
    bad = tmp_path / "bad.recokd.zip"
    bad.write_bytes(package_file.read_bytes()[:1000])
    folder = tmp_path / "models"
    with pytest.raises(RecokdError, match="not a zip file, or truncated"):
        install_model(bad, folder)
    assert list(folder.iterdir()) == []
    with pytest.raises(RecokdError, match="does not exist"):
        install_model(tmp_path / "missing.recokd.zip", folder)


def test_broken_packages_are_listed_with_a_reason(tmp_path, package_file):
    install_model(package_file, tmp_path)
    (tmp_path / "broken.recokd.zip").write_text("not a zip")
    broken, good = list_models(tmp_path)
    assert broken.name == "broken" and "not a zip file" in broken.error and broken.labels == []
    assert good.error is None


@pytest.mark.parametrize(("name", "file_name"), [
    ("../../etc/passwd", "etc_passwd.recokd.zip"),
    ("Liver & kidneys (v2)", "Liver_kidneys_v2.recokd.zip"),
    ("...", "model.recokd.zip"),
    ("CON", "CON_model.recokd.zip"),
])
def test_model_file_names_are_sanitised(name, file_name):
    assert model_file_name(name) == file_name


@pytest.mark.parametrize("name", ["../Tiny_student", "a/b", "with space"])
def test_names_that_are_not_model_names_are_refused(tmp_path, name):
    with pytest.raises(RecokdError, match="neither a package file nor a model name"):
        remove_model(name, tmp_path)


def test_unknown_names_list_the_installed_models(tmp_path, package_file):
    install_model(package_file, tmp_path)
    with pytest.raises(RecokdError, match=r"No model named 'other'.*known: Tiny_student"):
        resolve_model("other", tmp_path)


def test_default_folder_is_used_when_none_given(tmp_path, package_file, monkeypatch):
    monkeypatch.setenv(registry.MODELS_DIR_VARIABLE, str(tmp_path / "default"))
    install_model(package_file)
    assert [m.name for m in list_models()] == ["Tiny_student"]


def test_a_package_without_a_card_name_installs_under_its_file_name(tmp_path):
    plans, dataset_json = plans_for(), phantom_dataset_json()
    package = ModelPackage(plans, dataset_json, CONFIGURATION, default_label_infos(dataset_json),
                           seeded_weights(plans, dataset_json, seed=0))
    source = write_package(package, tmp_path / "my model.recokd.zip")
    assert install_model(source, tmp_path / "models").name == "my_model"


def test_bundled_models_are_listed_and_found_read_only_and_an_installed_one_of_the_same_name_wins(
        package_file, tmp_path, monkeypatch):
    bundled, installed = tmp_path / "bundled", tmp_path / "installed"
    bundled.mkdir()
    (bundled / "Tiny_student.recokd.zip").write_bytes(package_file.read_bytes())
    (bundled / "Other.recokd.zip").write_bytes(package_file.read_bytes())
    monkeypatch.setenv("RECOKD_BUNDLED_MODELS_DIR", str(bundled))
    assert registry.bundled_models_dir() == bundled
    listed = {m.name: m for m in list_models(installed)}
    assert set(listed) == {"Other", "Tiny_student"} and all(m.bundled for m in listed.values())
    assert listed["Other"].to_dict()["bundled"] is True
    assert resolve_model("Other", installed) == bundled / "Other.recokd.zip"
    with pytest.raises(RecokdError, match="bundled with ReCoKD"):
        remove_model("Other", installed)
    assert (bundled / "Other.recokd.zip").is_file()

    install_model(package_file, installed)  # installs as Tiny_student: the user's copy shadows the bundled one
    listed = {m.name: m for m in list_models(installed)}
    assert not listed["Tiny_student"].bundled and listed["Tiny_student"].path.parent == installed
    assert resolve_model("Tiny_student", installed).parent == installed


def test_without_a_bundled_folder_only_installed_models_are_listed(package_file, tmp_path, monkeypatch):
    monkeypatch.setenv("RECOKD_BUNDLED_MODELS_DIR", "")
    assert registry.bundled_models_dir() is None
    monkeypatch.delenv("RECOKD_BUNDLED_MODELS_DIR")
    assert registry.bundled_models_dir() in (None, registry.SOURCE_BUNDLED_DIR), "a checkout's Resources/Models"
    monkeypatch.setenv("RECOKD_BUNDLED_MODELS_DIR", str(tmp_path / "missing"))
    assert list_models(tmp_path / "installed") == []
