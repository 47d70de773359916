"""``recokd export`` and ``recokd models``: exit codes, one-line errors, the JSON list's shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_results import student_result

from recokd.cli import main


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    out = root / "student.recokd.zip"
    assert main(["export", "--result", str(student_result(root)), "-o", str(out), "--name", "cli student"]) == 0
    return out


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_export_writes_a_package_and_reports_it(tmp_path, capsys):
    out = tmp_path / "s.recokd.zip"
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"dice_mean": 0.8}))
    result = student_result(tmp_path)
    assert main(["export", "--result", str(result), "--fold", "0", "--checkpoint", "checkpoint_final.pth",
                 "-o", str(out), "--metrics", str(metrics)]) == 0
    assert out.is_file() and "parameters" in capsys.readouterr().out


def test_export_refuses_to_overwrite_with_one_line_and_exit_2(exported, capsys):
    result = next(exported.parent.glob("Dataset990_Phantom/*"))
    assert main(["export", "--result", str(result), "-o", str(exported)]) == 2
    line = error_line(capsys)
    assert line.startswith("recokd export: error: ") and "--overwrite" in line


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", "--result", str(tmp_path), "-o", str(tmp_path / "x.recokd.zip")]) == 2
    line = error_line(capsys)
    assert line.startswith("recokd export: error: ") and "plans.json is missing" in line


def test_models_add_list_remove(tmp_path, exported, capsys):
    folder = ["--models-dir", str(tmp_path)]
    assert main(["models", "add", str(exported), *folder]) == 0
    assert "Installed 'cli_student'" in capsys.readouterr().out
    assert main(["models", "add", str(exported), *folder]) == 2
    assert "already installed" in error_line(capsys)
    assert main(["models", "add", str(exported), "--overwrite", *folder]) == 0
    capsys.readouterr()

    assert main(["models", "list", "--json", *folder]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert set(entry) == {"name", "path", "labels", "description", "bundled"}
    assert entry["name"] == "cli_student" and Path(entry["path"]).is_file()
    assert entry["labels"][0] == {
        "value": 1, "name": "liver", "color": [221, 130, 101],
        "category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
        "type": {"scheme": "SCT", "code": "10200004", "meaning": "Liver"},
        "modifier": None, "custom": False,
    }

    assert main(["models", "remove", "cli_student", *folder]) == 0
    assert main(["models", "remove", "cli_student", *folder]) == 2
    assert "No model named 'cli_student'" in error_line(capsys)


def test_models_list_shows_broken_packages_in_text_and_skips_them_in_json(tmp_path, exported, capsys):
    folder = ["--models-dir", str(tmp_path)]
    main(["models", "add", str(exported), *folder])
    (tmp_path / "broken.recokd.zip").write_text("nope")
    capsys.readouterr()
    assert main(["models", "list", *folder]) == 0
    out = capsys.readouterr().out
    assert "broken  BROKEN:" in out and "cli_student  [liver, kidney_left" in out
    assert main(["models", "list", "--json", *folder]) == 0
    captured = capsys.readouterr()
    assert [m["name"] for m in json.loads(captured.out)] == ["cli_student"]


def test_models_list_of_an_empty_folder(tmp_path, capsys):
    assert main(["models", "list", "--models-dir", str(tmp_path / "none")]) == 0
    assert "No models installed" in capsys.readouterr().out


def test_models_list_json_in_a_real_subprocess(tmp_path, exported):
    folder = tmp_path / "models"
    assert main(["models", "add", str(exported), "--models-dir", str(folder)]) == 0
    done = subprocess.run([sys.executable, "-m", "recokd", "models", "list", "--json", "--models-dir", str(folder)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert [m["name"] for m in json.loads(done.stdout)] == ["cli_student"]
    bad = subprocess.run([sys.executable, "-m", "recokd", "models", "add", str(tmp_path / "none.recokd.zip"),
                          "--models-dir", str(folder)], capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert bad.stderr.startswith("recokd models: error: ")
