"""The benchmark protocol end to end on a micro phantom, then a KD-weight and a width sweep beside it.

The protocol runs in a subprocess with a preset smaller than ``smoke`` (the named presets take
minutes): real nnU-Net planning, a real teacher, four real student arms with two seeds each,
evaluation on the held-out cases with paired statistics, the CT-sized volume (each model in
its own process) and the step timing.
The sweeps then run through the command line, reusing that teacher and those packages.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import isolated_env, recokd

from recokd.nnunet.checkpoint import load_checkpoint
from recokd.package.archive import load_package

DRIVER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from recokd.evaluate.protocol import BenchmarkConfig, Preset, run_benchmark
    from recokd.evaluate.report import write_report
    from recokd.nnunet.training import Schedule

    if __name__ == "__main__":
        work_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
        micro = Preset("micro", "test only", Schedule(epochs=1, iterations_per_epoch=2, val_iterations_per_epoch=1),
                       max_test_cases=2, ct_shape=(24, 40, 40), ct_tile_step=1.0, timing_steps=1,
                       phantom_cases=(6, 2), phantom_shape=(32, 32, 32))
        results = run_benchmark(BenchmarkConfig("phantom", micro, work_dir, device="cpu", threads=1, seeds=2))
        print(json.dumps({k: str(v) for k, v in write_report(results, out_dir, "phantom").items()}))
""")


@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmark")
    driver = root / "driver.py"
    driver.write_text(DRIVER)
    work_dir, out_dir = root / "work", root / "results"
    finished = subprocess.run([sys.executable, str(driver), str(work_dir), str(out_dir)], env=isolated_env(),
                              capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    paths = json.loads(finished.stdout.strip().splitlines()[-1])
    return work_dir, json.loads(open(paths["json"], encoding="utf-8").read()), paths


def test_benchmark_measures_every_model_on_held_out_cases(benchmark_run):
    work_dir, results, paths = benchmark_run
    split = results["split"]
    assert len(split["test"]) == 2 and not set(split["test"]) & set(split["train"])
    models = results["models"]
    assert list(models) == ["teacher", "student_recokd", "student_logitkd", "student_plain", "student_plain_random"]
    for entry in models.values():
        assert [case["case"] for case in entry["cases"]] == split["test"]
        assert entry["cpu_latency_s"] > 0 and entry["params"] > 0 and entry["flops"] > 0
    assert models["student_recokd"]["params"] <= 0.1 * models["teacher"]["params"], "width chosen within budget"
    for key in ("teacher", "student_recokd"):  # the CT-sized volume, each in a process of its own
        assert models[key]["ct_cpu_latency_s"] > 0 and models[key]["peak_rss_mb"] > 100
    assert results["kd_step_timing"]["kd_step_s"] > 0 and results["kd_step_ratio"] > 0
    assert models["teacher"]["training"]["epochs"] == 1 and "kd_weighted" not in models["teacher"]["training"]
    assert results["seeds"]["students"] == [0, 1]
    for key, arm in results["options"]["arms"].items():  # every arm, every seed, its own training
        runs = models[key]["runs"]
        assert [run["seed"] for run in runs] == [0, 1] and models[key]["init"] == arm["init"]
        for run in runs:
            assert run["training"]["epochs"] == 1 and run["training"]["seconds"] > 0
            assert len(run["training"]["pseudo_dice_per_class"][0]) == len(run["dice_per_class"])
        seed_means = [run["mean_dice"] for run in runs]
        if None not in seed_means:
            assert models[key]["mean_dice"] == pytest.approx(sum(seed_means) / 2)
        checkpoints = sorted((work_dir / "students" / key).rglob("checkpoint_final.pth"))
        assert [c.relative_to(work_dir / "students" / key).parts[0] for c in checkpoints] == ["seed_0", "seed_1"]
        inheritance = load_checkpoint(checkpoints[0])["recokd"]["inheritance"]
        assert (inheritance is None) == (arm["init"] == "random")
    assert "kd_weighted" in models["student_recokd"]["runs"][0]["training"]
    compared = {(c["a"], c["b"], c["metric"]) for c in results["comparisons"]}
    assert ("student_recokd", "student_plain", "dice") in compared
    assert ("student_recokd", "student_plain_random", "hd95_mm") in compared
    report = open(paths["markdown"], encoding="utf-8").read()
    assert "## Dice by structure size" in report and "adrenal_gland" in report and "## Training" in report
    assert "## Paired comparisons" in report and "Student, no KD, random init, seed 1" in report


def test_kd_weight_sweep_trains_new_students_beside_the_benchmark_and_scores_all(benchmark_run, tmp_path):
    work_dir, results, _ = benchmark_run
    env = isolated_env()
    out = tmp_path / "sweep"
    finished = recokd("benchmark", "--dataset", "phantom", "--work-dir", str(work_dir), "--kd-weight-sweep", "0.5",
                      "0.01", "--device", "cpu", "--threads", "1", "--output-dir", str(out), env=env)
    assert "Report:" in finished.stdout
    sweep = json.loads((out / "phantom_kd_weight_sweep.json").read_text(encoding="utf-8"))
    assert sweep["kd_weights"] == [0.01, 0.5], "the benchmark's own lambda is reused, not trained again"
    assert list(sweep["models"]) == ["teacher", "student_plain", "student_recokd", "student_recokd_kd0.5"]
    assert [m["kd_weight"] for m in sweep["models"].values()] == [None, 0.0, 0.01, 0.5]
    assert (work_dir / "kd_weight_sweep" / "student_recokd_kd0.5" / "nnUNet_results").is_dir()
    checkpoint = next((work_dir / "kd_weight_sweep").rglob("checkpoint_final.pth"))
    assert load_checkpoint(checkpoint)["recokd"]["options"]["kd_weight"] == 0.5
    assert sweep["models"]["student_plain"]["dice_per_class"] == \
        results["models"]["student_plain"]["runs"][0]["dice_per_class"], "the benchmark's packages score as before"
    assert (out / "phantom_kd_weight_sweep_dice_vs_kd_weight.png").stat().st_size > 10_000
    assert (out / "phantom_kd_weight_sweep_training.png").stat().st_size > 10_000
    assert sweep["models"]["teacher"]["training"] == results["models"]["teacher"]["training"]
    assert "| Student, ReCo-KD | 0.01 |" in (out / "phantom_kd_weight_sweep.md").read_text(encoding="utf-8")

    refused = recokd("benchmark", "--dataset", "phantom", "--work-dir", str(tmp_path), "--kd-weight-sweep", "0.1",
                     env=env, check=False)
    assert refused.returncode == 2 and "not a benchmark work directory" in refused.stderr


def test_width_sweep_adds_a_recokd_and_a_plain_student_per_width_and_times_each_width(benchmark_run, tmp_path):
    work_dir, results, _ = benchmark_run
    out = tmp_path / "sweep"
    recokd("benchmark", "--dataset", "phantom", "--work-dir", str(work_dir), "--width-sweep", "1/8", "0.25",
           "--device", "cpu", "--threads", "1", "--output-dir", str(out), env=isolated_env())
    sweep = json.loads((out / "phantom_width_sweep.json").read_text(encoding="utf-8"))
    assert sweep["kind"] == "width" and sweep["widths"] == ["1/4", "1/8"], "the benchmark's own width is reused"
    models = sweep["models"]
    assert list(models) == ["teacher", "student_plain", "student_recokd", "student_plain_w8", "student_recokd_w8"]
    assert [(m["mode"], m["width"]) for m in models.values()] == [
        ("teacher", "1"), ("none", "1/4"), ("recokd", "1/4"), ("none", "1/8"), ("recokd", "1/8")]
    assert models["student_recokd_w8"]["params"] < models["student_recokd"]["params"] < models["teacher"]["params"]
    assert models["student_plain_w8"]["params"] == models["student_recokd_w8"]["params"]
    for folder, mode in (("student_recokd_w8", "recokd"), ("student_plain_w8", "none")):
        checkpoint = load_checkpoint(next((work_dir / "width_sweep" / folder).rglob("checkpoint_final.pth")))
        assert checkpoint["recokd"]["width"] == "1/8" and checkpoint["recokd"]["options"]["mode"] == mode
    timed = [key for key, m in models.items() if m.get("ct_cpu_latency_s")]
    assert timed == ["teacher", "student_recokd", "student_recokd_w8"], "one run: the teacher and each width"
    assert all(models[key]["peak_rss_mb"] > 100 for key in timed)
    assert models["student_recokd"]["dice_per_class"] == results["models"]["student_recokd"]["runs"][0]["dice_per_class"]
    report = (out / "phantom_width_sweep.md").read_text(encoding="utf-8")
    assert "| Student ×1/8, ReCo-KD |" in report and "## ReCo-KD against no KD at each width" in report
    assert (out / "phantom_width_sweep_dice_vs_width.png").stat().st_size > 10_000


def test_init_study_probes_each_start_before_training_and_trains_it_beside_the_benchmarks(benchmark_run, tmp_path):
    work_dir, results, _ = benchmark_run
    out = tmp_path / "sweep"
    recokd("benchmark", "--dataset", "phantom", "--work-dir", str(work_dir), "--init-study", "gamma", "--device", "cpu",
           "--threads", "1", "--output-dir", str(out), env=isolated_env())
    study = json.loads((out / "phantom_init_sweep.json").read_text(encoding="utf-8"))
    assert study["kind"] == "init"
    models = study["models"]
    assert list(models) == ["teacher", "student_plain_random", "student_plain", "student_plain_init-gamma"]
    classes = len(results["models"]["teacher"]["dice_per_class"])
    for key in ("student_plain_random", "student_plain", "student_plain_init-gamma"):
        probe = models[key]["before_training"]
        assert len(probe["pseudo_dice_per_class"]) == classes and 0 <= probe["pseudo_dice"] <= 1
        assert (probe["inheritance"] is None) == (key == "student_plain_random")
    assert models["student_plain_init-gamma"]["start"] == {"init": "teacher", "init_importance": "gamma",
                                                           "init_refit": "none", "learning_rate": 0.01}
    assert models["student_plain_init-gamma"]["before_training"]["inheritance"]["refit"] == "none"
    assert models["student_plain"]["dice_per_class"] == results["models"]["student_plain"]["runs"][0]["dice_per_class"]
    report = (out / "phantom_init_sweep.md").read_text(encoding="utf-8")
    assert "| Student, no KD, start gamma | teacher | gamma | none | 0.01 |" in report
    assert (out / "phantom_init_sweep_dice_vs_init.png").stat().st_size > 10_000


def test_shipped_students_carry_their_data_licence_and_measured_accuracy_and_are_offered(benchmark_run, tmp_path):
    work_dir, results, paths = benchmark_run
    bundled = tmp_path / "Models"
    finished = recokd("benchmark", "--dataset", "phantom", "--work-dir", str(work_dir), "--results", paths["json"],
                      "--ship-students", str(bundled), env=isolated_env())
    assert finished.stdout.count("Shipped ") == 2
    shipped = sorted(p.name for p in bundled.glob("*.recokd.zip"))
    assert shipped == ["phantom-no-kd-x1of4.recokd.zip", "phantom-recokd-x1of4.recokd.zip"]
    card = load_package(bundled / "phantom-recokd-x1of4.recokd.zip").card
    run = results["models"]["student_recokd"]["runs"][0]
    assert card["metrics"]["test_mean_dice"] == run["mean_dice"] and card["seed"] == run["seed"]
    assert card["training_data"]["licence"] == "CC0-1.0" and card["training_data"]["citation"]
    assert card["metrics"]["recokd_minus_no_kd_dice"]["cases"] == 2
    env = isolated_env() | {"RECOKD_BUNDLED_MODELS_DIR": str(bundled), "RECOKD_MODELS_DIR": str(tmp_path / "mine")}
    listed = json.loads(recokd("models", "list", "--json", env=env).stdout)
    assert [(m["name"], m["bundled"]) for m in listed] == [("phantom-no-kd-x1of4", True),
                                                          ("phantom-recokd-x1of4", True)]
