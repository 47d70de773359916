"""The benchmark report: JSON schema, Markdown generated from the JSON, target verdicts, plots, README block."""

import copy
import json
import math

import matplotlib.image
import numpy as np
import pytest

from recokd.errors import RecokdError
from recokd.evaluate.plots import model_label
from recokd.evaluate.report import (
    markdown_table,
    read_results,
    structure_size_table,
    target_checks,
    training_table,
    update_readme,
    write_report,
)
from recokd.evaluate.sweep_report import width_table

MODEL_KEYS = ("teacher", "student_recokd", "student_plain", "student_logitkd")
SCHEMA_KEYS = {"params", "flops", "mean_dice", "dice_per_class", "hd95_per_class", "cpu_latency_s",
               "gpu_latency_s", "peak_rss_mb"}


def model(params, dice, hd95, latency, ct_latency=None, rss=None) -> dict:
    classes = {"Anterior": dice[0], "Posterior": dice[1]}
    return {
        "params": params, "flops": params * 1000, "mean_dice": sum(dice) / 2, "dice_per_class": classes,
        "hd95_per_class": {"Anterior": hd95[0], "Posterior": hd95[1]}, "mean_hd95_mm": sum(hd95) / 2,
        "cpu_latency_s": latency, "gpu_latency_s": None, "ct_cpu_latency_s": ct_latency, "peak_rss_mb": rss,
        "cases": [
            {"case": f"case_{i}", "latency_s": latency, "dice": {"Anterior": dice[0] - 0.01 * i, "Posterior": None},
             "hd95_mm": {"Anterior": hd95[0], "Posterior": None}, "volume_ml": {"Anterior": 1.5 + i, "Posterior": 0.0}}
            for i in range(3)
        ],
    }


def sample_results() -> dict:
    return {
        "benchmark": "hippocampus",
        "title": "Test benchmark",
        "created": "2026-01-01T00:00:00+00:00",
        "dataset": {"name": "Dataset904_HippocampusSplit", "licence": "CC-BY-SA 4.0"},
        "device": {"training_device": "cpu", "cpu": "Test CPU", "logical_cores": 2, "gpu": None},
        "schedule": {"preset": "cpu", "epochs": 25, "iterations_per_epoch": 30, "val_iterations_per_epoch": 5},
        "split": {"seed": 0, "num_train": 3, "num_test": 2, "train": ["a", "b", "c"], "test": ["d", "e"]},
        "seeds": {"split": 0, "training": 0},
        "versions": {"recokd": "0.1", "torch": "2.13"},
        "options": {"kd": {"mode": "recokd", "kd_weight": 0.01}, "width": "1/4"},
        "notes": ["A generated note."],
        "models": {
            "teacher": model(2_000_000, (0.900, 0.880), (1.5, 1.7), 0.80, ct_latency=600.0, rss=3000.0),
            "student_recokd": model(130_000, (0.897, 0.878), (1.6, 1.7), 0.20, ct_latency=90.0, rss=900.0),
            "student_plain": model(130_000, (0.880, 0.870), (1.9, 1.8), 0.20),
            "student_logitkd": model(130_000, (0.885, 0.872), (1.8, 1.8), 0.21),
        },
        "kd_step_ratio": 1.4,
        "kd_step_timing": {"kd_step_s": 0.14, "plain_step_s": 0.1, "device": "cpu", "steps": 10},
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    results = sample_results()
    results["models"]["student_plain"]["hd95_per_class"]["Posterior"] = math.nan  # undefined -> null
    return out, write_report(results, out, "hippocampus")


def test_json_has_the_issue_schema_and_no_nan(written):
    _, paths = written
    text = paths["json"].read_text(encoding="utf-8")
    assert "NaN" not in text
    results = json.loads(text)
    for key in ("kd_step_ratio", "device", "schedule", "split", "seeds", "versions", "options"):
        assert key in results
    assert tuple(results["models"]) == MODEL_KEYS
    for entry in results["models"].values():
        assert SCHEMA_KEYS <= set(entry)
    assert results["models"]["student_plain"]["hd95_per_class"]["Posterior"] is None
    assert read_results(paths["json"]) == results


def test_markdown_table_is_derived_from_the_json():
    results = sample_results()
    table = markdown_table(results)
    assert "| Student, ReCo-KD | 0.13 M | 0.065× |" in table
    assert "89.70" in table  # Anterior Dice of the ReCo-KD student, in percent
    assert "6.7×" in table  # CT speed-up 600 s / 90 s
    changed = copy.deepcopy(results)
    changed["models"]["student_recokd"]["dice_per_class"]["Anterior"] = 0.5123
    new_table = markdown_table(changed)
    assert new_table != table and "51.23" in new_table and "89.70" not in new_table
    assert len(table.splitlines()) == 2 + len(MODEL_KEYS)


def test_structure_size_table_ranks_structures_by_volume_and_compares_recokd_with_plain():
    results = sample_results()
    for entry in results["models"].values():  # a second, smaller structure present in every case
        for i, case in enumerate(entry["cases"]):
            case["dice"]["Posterior"], case["volume_ml"]["Posterior"] = 0.5, 0.1 * (i + 1)
    results["models"]["student_recokd"]["cases"][0]["dice"]["Posterior"] = 0.8
    rows = structure_size_table(results).splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == ["| Posterior", "| Anterior"], "smallest first"
    assert rows[0].split(" | ")[1:3] == ["0.20", "3"]  # mean volume (ml), cases
    assert rows[0].endswith("| +10.00 |")  # ReCo-KD (0.8 + 0.5 + 0.5) / 3 vs plain 0.5
    assert rows[1].endswith("| +1.70 |")  # Anterior: 0.887 vs 0.870 on average over the 3 cases

    results["models"]["student_recokd"]["cases"][0]["dice"]["Posterior"] = 0.5 - 1e-5  # a gap that rounds to zero
    assert structure_size_table(results).splitlines()[2].endswith("| +0.00 |"), "never -0.00"

    for entry in results["models"].values():
        entry["cases"] = []
    assert structure_size_table(results) is None


def test_training_records_give_a_table_and_a_plot_of_pseudo_dice(tmp_path):
    results = sample_results()
    assert training_table(results) is None
    assert "training" not in write_report(results, tmp_path / "without", "hippocampus"), "no plot without records"
    results["models"]["student_plain"]["training"] = {
        "epochs": 3, "seconds": 150.0, "pseudo_dice": [0.0, 0.4, 0.3],
        "pseudo_dice_per_class": [[0.0, 0.0], [0.5, 0.3], [0.4, 0.2]], "train_loss": [1.0, 0.5, 0.2],
        "kd_weighted": [0.0, 0.01, 0.025]}
    (row,) = training_table(results).splitlines()[2:]
    assert row == "| Student, no KD | 3 | 2.5 | 2 | 2 | 2 | 30.00 | 40.00 | 0.200 | 0.025 |"  # first epochs >= 10 %: mean, each class
    results["models"]["student_plain"]["training"]["pseudo_dice_per_class"] = [[0.0, 0.0], [0.5, 0.0], [0.4, 0.12]]
    assert training_table(results).splitlines()[2].startswith("| Student, no KD | 3 | 2.5 | 2 | 2 | 3 | 30.00 |")
    results["models"]["student_plain"]["training"]["pseudo_dice_per_class"] = [[0.0, 0.0], [0.5, 0.0], [0.4, 0.09]]
    assert "| 2 | – | 30.00 |" in training_table(results), "a class never learned"
    paths = write_report(results, tmp_path / "with", "hippocampus")
    assert matplotlib.image.imread(paths["training"]).shape[1] > 300
    assert "## Training" in paths["markdown"].read_text(encoding="utf-8")


def test_targets_are_judged_on_the_measured_numbers():
    checks = {c.target.split(" ")[0] + str(i): c.status for i, c in enumerate(target_checks(sample_results()))}
    assert list(checks.values()) == ["met", "met", "met", "met", "met", "not measured"]

    results = sample_results()
    results["models"]["student_recokd"]["mean_dice"] = 0.88  # 0.9 points below the teacher
    results["models"]["student_recokd"]["ct_cpu_latency_s"] = 200.0  # 3x only
    results["kd_step_timing"]["device"] = "cuda:0"
    results["kd_step_ratio"] = 1.8
    statuses = [c.status for c in target_checks(results)]
    assert statuses[0] == "**missed**" and statuses[3] == "**missed**" and statuses[5] == "**missed**"

    del results["models"]["teacher"]["ct_cpu_latency_s"]
    assert target_checks(results)[3].status == "not measured"


def test_markdown_report_holds_table_targets_notes_and_plots(written):
    out, paths = written
    report = paths["markdown"].read_text(encoding="utf-8")
    assert markdown_table(read_results(paths["json"])) in report
    assert "## Targets" in report and "A generated note." in report
    assert structure_size_table(read_results(paths["json"])) in report
    for kind in ("dice_vs_params", "dice_vs_latency", "dice_per_class", "dice_vs_volume"):
        assert f"](hippocampus_{kind}.png)" in report
        assert (out / f"hippocampus_{kind}.png").is_file()


def test_plots_are_real_images(written):
    _, paths = written
    for kind in ("dice_vs_params", "dice_vs_latency", "dice_per_class", "dice_vs_volume"):
        image = matplotlib.image.imread(paths[kind])
        assert image.shape[0] > 200 and image.shape[1] > 300
        assert np.std(image[..., :3]) > 0.05  # not a blank canvas


def test_readme_block_is_replaced_from_the_json_and_left_alone_when_current(written, tmp_path):
    _, paths = written
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\n<!-- results:hippocampus:start -->\nold table\n<!-- results:hippocampus:end -->\n"
                      "\nAfter.\n")
    assert update_readme(readme, paths["json"]) is True
    text = readme.read_text(encoding="utf-8")
    assert "old table" not in text and markdown_table(read_results(paths["json"])) in text
    assert text.startswith("# Title\n") and text.endswith("\nAfter.\n")
    assert "hippocampus.md" in text
    assert update_readme(readme, paths["json"]) is False


def test_readme_without_markers_is_an_error(written, tmp_path):
    _, paths = written
    readme = tmp_path / "README.md"
    readme.write_text("# No markers\n")
    with pytest.raises(RecokdError, match="markers"):
        update_readme(readme, paths["json"])


def test_benchmark_command_refreshes_the_readme_and_rerenders_the_report(written, tmp_path):
    from recokd.cli import main

    _, paths = written
    results = tmp_path / "hippocampus.json"
    results.write_text(paths["json"].read_text(encoding="utf-8"))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:hippocampus:start -->\n<!-- results:hippocampus:end -->\n")
    assert main(["benchmark", "--render", "--update-readme", "--results", str(results), "--readme", str(readme)]) == 0
    assert (tmp_path / "hippocampus.md").is_file() and (tmp_path / "hippocampus_dice_vs_volume.png").is_file()
    assert "| Student, ReCo-KD |" in readme.read_text(encoding="utf-8")


@pytest.mark.parametrize(("key", "label"), [
    ("student_recokd", "Student, ReCo-KD"),
    ("student_recokd_kd0.1", "Student, ReCo-KD, λ 0.1"),
    ("student_plain_w8", "Student ×1/8, no KD"),
    ("student_recokd_w2", "Student ×1/2, ReCo-KD"),
    ("something_else", "something_else"),
])
def test_sweep_students_are_labelled_by_what_changed(key, label):
    assert model_label(key) == label


def sample_width_sweep() -> dict:
    """:func:`sample_results` as a width sweep: a ReCo-KD and a plain student at 1/4 and at 1/8."""
    results = sample_results()
    models = results["models"]
    del models["student_logitkd"]
    for key, mode in (("teacher", "teacher"), ("student_recokd", "recokd"), ("student_plain", "none")):
        models[key].update(mode=mode, width="1" if mode == "teacher" else "1/4")
    models["student_recokd_w8"] = {**copy.deepcopy(models["student_recokd"]), "width": "1/8", "mean_dice": 0.80,
                                   "params": 100_000, "ct_cpu_latency_s": 5.0}
    models["student_plain_w8"] = {**copy.deepcopy(models["student_plain"]), "width": "1/8", "mean_dice": 0.81,
                                  "params": 100_000}
    results.update(kind="width", widths=["1/4", "1/8"], param_budget=0.1)
    return results


def test_width_table_pairs_each_widths_recokd_and_plain_students():
    results = sample_width_sweep()
    models = results["models"]
    rows = width_table(results).splitlines()[2:]
    teacher = models["teacher"]
    assert rows[1] == (f"| 1/8 | {100_000 / teacher['params']:.3f}× | 81.00 | 80.00 | -1.00 | "
                       f"{models['student_plain']['mean_hd95_mm']:.2f} | {models['student_recokd']['mean_hd95_mm']:.2f} | "
                       f"{teacher['ct_cpu_latency_s'] / 5.0:.1f}× |")
    assert rows[0].startswith("| 1/4 |")


def test_render_of_a_sweep_json_rewrites_the_sweep_report(tmp_path):
    from recokd.cli import main

    results = tmp_path / "hippocampus_width_sweep.json"
    results.write_text(json.dumps({**sample_width_sweep(), "notes": ["Why KD gains little here."]}), encoding="utf-8")
    assert main(["benchmark", "--render", "--results", str(results)]) == 0
    report = (tmp_path / "hippocampus_width_sweep.md").read_text(encoding="utf-8")
    assert "## ReCo-KD against no KD at each width" in report and "## Targets" not in report
    assert "## Notes\n\n- Why KD gains little here.\n" in report, "the analysis added to the JSON is rendered"
    assert sorted(path.name for path in tmp_path.glob("*.png")) == [
        "hippocampus_width_sweep_dice_vs_width.png"], "the sweep's plot, not the benchmark's four"


def seeded_results(recokd_shift: float) -> dict:
    """Results of a seeded run: four student arms with two seeds each, compared case by case."""
    from recokd.evaluate.protocol import COMPARISONS
    from recokd.evaluate.statistics import compare_models, seed_aggregate

    results = sample_results()
    teacher = results["models"]["teacher"]
    arms = {"student_recokd": ("recokd", "teacher", recokd_shift), "student_logitkd": ("logit", "teacher", 0.0),
            "student_plain": ("none", "teacher", 0.0), "student_plain_random": ("none", "random", -0.05)}
    models = {"teacher": teacher}
    for key, (mode, init, shift) in arms.items():
        runs = []
        for seed in (0, 1):
            run = model(130_000, (0.85 + shift + 0.001 * seed, 0.84 + shift), (1.6, 1.7), 0.2)
            for i, case in enumerate(run["cases"]):
                case["dice"]["Anterior"] = 0.80 + shift + 0.01 * i + 0.002 * seed + 0.003 * (i % 2)
            run.update(seed=seed, mode=mode, init=init,
                       training={"epochs": 2, "seconds": 60.0, "pseudo_dice": [0.3, 0.5],
                                 "pseudo_dice_per_class": [[0.3, 0.3], [0.5, 0.5]], "train_loss": [-0.1, -0.3]})
            runs.append(run)
        models[key] = seed_aggregate(runs)
    results["models"] = models
    results["comparisons"] = compare_models(models, COMPARISONS)
    return results


def test_seeded_results_show_seed_spread_paired_statistics_and_judge_the_gain_on_the_interval(tmp_path):
    clear_gain = seeded_results(recokd_shift=0.01)
    table = markdown_table(clear_gain)
    assert "| Student, no KD, random init | random | 2 |" in table
    assert "| Student, ReCo-KD | teacher | 2 |" in table and " ± " in table
    checks = {c.target: c for c in target_checks(clear_gain)}
    against_inherited = next(c for t, c in checks.items() if "started from the teacher" in t)
    assert against_inherited.status == "met" and "95 % CI +" in against_inherited.measured
    paths = write_report(clear_gain, tmp_path, "seeded")
    report = paths["markdown"].read_text(encoding="utf-8")
    assert "## Paired comparisons" in report
    assert "| Student, ReCo-KD − Student, no KD | Dice | +1.00 points |" in report
    assert "Student, ReCo-KD better (CI excludes 0)" in report
    assert "| Student, no KD, random init, seed 1 | 2 |" in report, "one training row per seed"
    assert matplotlib.image.imread(paths["comparisons"]).shape[0] > 100
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:seeded:start -->\n<!-- results:seeded:end -->\n", encoding="utf-8")
    update_readme(readme, paths["json"])
    assert "| Student, ReCo-KD − Student, no KD | Dice | +1.00 points |" in readme.read_text(encoding="utf-8")

    first_epoch = next(c for t, c in checks.items() if "leaves the all-background phase in epoch 1" in t)
    assert first_epoch.status == "met" and "over 6 trainings" in first_epoch.measured, "teacher-started arms only"

    no_gain = seeded_results(recokd_shift=0.0)
    no_gain["models"]["student_plain"]["runs"][1]["training"]["pseudo_dice"][0] = 0.02
    checks = {c.target: c for c in target_checks(no_gain)}
    assert next(c for t, c in checks.items() if "in epoch 1" in t).status == "**missed**", "one seed is enough"
    assert next(c for t, c in checks.items() if "started from the teacher" in t).status == "**missed**"
    assert "no evidence either way" in write_report(no_gain, tmp_path, "flat")["markdown"].read_text(encoding="utf-8")
