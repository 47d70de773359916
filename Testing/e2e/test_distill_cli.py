"""``recokd distill`` end to end on CPU: trains, logs every KD term, exports, refuses bad teachers."""

from __future__ import annotations

import json
import shutil

from conftest import DATASET, TINY_SCHEDULE, json_lines

from recokd.nnunet.checkpoint import load_checkpoint
from recokd.package.archive import load_package


def test_distill_trains_student_from_teacher_and_exports_package(tiny_pipeline, tmp_path):
    package = tmp_path / "student.recokd.zip"
    result = tiny_pipeline.distill("--width", "1/4", "--progress", "json", "--export", str(package),
                                   "--epochs", "2", "--iterations-per-epoch", "2", "--val-iterations", "1")
    events = json_lines(result.stdout)  # every stdout line must be a JSON object
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["epoch"] for e in progress] == [1, 2]
    assert progress[-1]["fraction"] == 1.0
    assert set(progress[-1]["values"]) >= {"seg_loss", "kd_fg", "kd_bg", "kd_att", "kd_ctx", "kd_total", "kd_lambda"}
    assert progress[-1]["values"]["kd_fg"] > 0 and progress[-1]["values"]["kd_ctx"] >= 0
    assert 0 <= progress[-1]["values"]["mean_fg_dice"] <= 1, "nnU-Net's pseudo Dice (numpy floats) is reported"
    assert events[-1]["event"] == "result" and events[-1]["package"] == str(package)

    student_folder = tiny_pipeline.work_dir / "nnUNet_results" / DATASET / "ReCoKDTrainer__nnUNetPlans_ReCoKD_w4__3d_fullres"
    checkpoint = load_checkpoint(student_folder / "fold_0" / "checkpoint_final.pth")
    assert checkpoint["recokd"]["options"]["mode"] == "recokd"
    assert checkpoint["recokd"]["kd_modules"], "adapters and MS-CA blocks are checkpointed"
    assert (student_folder / "fold_0" / "distillation_progress.png").stat().st_size > 10_000
    log_text = "".join(p.read_text() for p in (student_folder / "fold_0").glob("training_log_*.txt"))
    assert "distillation: seg_loss" in log_text and "kd_ctx" in log_text

    teacher_plans = json.loads((tiny_pipeline.teacher / "plans.json").read_text())
    student_plans = json.loads((student_folder / "plans.json").read_text())
    teacher_arch = teacher_plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    student_arch = student_plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    assert student_arch["features_per_stage"] == [max(8, c // 4) for c in teacher_arch["features_per_stage"]]
    loaded = load_package(package)
    assert loaded.plans["plans_name"] == "nnUNetPlans_ReCoKD_w4"
    assert not any("adapter" in key or "ms_ca" in key for key in loaded.state_dict)


def test_distill_baselines_land_in_their_own_result_folders(tiny_pipeline):
    for mode, trainer in (("none", "ReCoKDTrainer_noKD"), ("logit", "ReCoKDTrainer_logitKD")):
        tiny_pipeline.distill("--mode", mode, "--width", "1/2", "--progress", "none", "--no-export", *TINY_SCHEDULE)
        folder = tiny_pipeline.work_dir / "nnUNet_results" / DATASET / f"{trainer}__nnUNetPlans_ReCoKD_w2__3d_fullres"
        saved = load_checkpoint(folder / "fold_0" / "checkpoint_final.pth")["recokd"]
        assert saved["options"]["mode"] == mode
        assert saved["kd_modules"] == {}


def test_teacher_with_other_labels_is_refused_with_a_clear_message(tiny_pipeline, tmp_path):
    wrong = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.copytree(tiny_pipeline.teacher, wrong)
    dataset_json = json.loads((wrong / "dataset.json").read_text())
    dataset_json["labels"] = {"background": 0, "tumour": 1}
    (wrong / "dataset.json").write_text(json.dumps(dataset_json))
    result = tiny_pipeline.distill("--width", "1/8", "--progress", "json", "--no-export", *TINY_SCHEDULE,
                                   teacher=wrong, check=False)
    assert result.returncode == 2
    assert "labels" in result.stderr and "differ" in result.stderr
    error = json_lines(result.stdout)[-1]
    assert error["event"] == "error" and "labels" in error["message"]


def test_unsupported_width_is_refused_before_any_work(tiny_pipeline):
    result = tiny_pipeline.distill("--width", "1/3", "--no-export", check=False)
    assert result.returncode == 2
    assert "1/3" in result.stderr and "1/4" in result.stderr
