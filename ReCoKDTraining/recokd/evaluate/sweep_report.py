"""A sweep's report (:mod:`recokd.evaluate.student_sweep`): JSON, Markdown and plots, from its results alone.

All kinds share the provenance line, the Dice-by-structure-size and Training tables and the
training plot. A KD-weight sweep's table has one row per model with its lambda and Dice, and
its plot Dice against lambda; a width sweep reuses the benchmark's results table (size, FLOPs,
Dice, HD95, latency, the CT-sized volume) and adds, per width, the ReCo-KD student against the
plain one, with a plot of Dice and CT-volume time against parameters; an init study has one row
per start (how it was built, its pseudo Dice before the first step and during training, its
test Dice) and a plot of pseudo Dice per epoch from epoch 0.
"""

from __future__ import annotations

import json
from pathlib import Path

from recokd.evaluate.plots import (
    model_label,
    plot_dice_vs_kd_weight,
    plot_start_study,
    plot_training,
    plot_width_sweep,
)
from recokd.evaluate.report import (
    MISSING,
    PLAIN,
    dice_percent,
    first_learned_epoch,
    json_ready,
    markdown_rows,
    markdown_table,
    notes_section,
    number_text,
    points_text,
    ratio_text,
    speedup_text,
    structure_size_table,
    training_table,
)

KIND_PLOTS = {"kd_weight": plot_dice_vs_kd_weight, "width": plot_width_sweep, "init": plot_start_study}
CHANGED = {"kd_weight": "λ", "width": "width (a ReCo-KD and a plain student per width)",
           "init": "start (a plain student per way of inheriting from the teacher)"}


def write_sweep_report(results: dict, out_dir: Path, name: str) -> dict[str, Path]:
    """``<name>.json``, ``<name>.md``, ``<name>_<plot>.png`` in ``out_dir``; returns the paths by kind."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = json_ready(results)
    kind = results["kind"]
    plots = {f"dice_vs_{kind}": KIND_PLOTS[kind](results, out_dir / f"{name}_dice_vs_{kind}.png"),
             "training": plot_training(results, out_dir / f"{name}_training.png")}
    plots = {plot: path for plot, path in plots.items() if path is not None}
    paths = {"json": out_dir / f"{name}.json", "markdown": out_dir / f"{name}.md", **plots}
    paths["json"].write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(sweep_markdown(results, {plot: path.name for plot, path in plots.items()}),
                                 encoding="utf-8")
    return paths


def sweep_markdown(results: dict, plot_files: dict[str, str]) -> str:
    """The sweep's report: what was measured where, the kind's tables, sizes, training, notes, plots."""
    schedule, device = results.get("schedule", {}), results.get("device", {})
    changed = CHANGED[results["kind"]]
    lines = [f"# {results.get('title', 'Sweep')}", "",
             f"Measured {results.get('created')} on {device.get('cpu', '?')} ({device.get('logical_cores', '?')} "
             f"logical cores), training on {device.get('training_device', '?')}; schedule `{schedule.get('preset')}` "
             f"({schedule.get('epochs')} epochs × {schedule.get('iterations_per_epoch')} iterations), benchmark "
             f"student width {results.get('width')}, seed {results.get('seed')}. Every new student has the "
             f"benchmark's options but its {changed}; all models scored in this run on the benchmark's held-out "
             "cases.", ""]
    if results["kind"] == "kd_weight":
        lines += [kd_weight_table(results), ""]
    elif results["kind"] == "init":
        lines += [start_table(results), "",
                  "Before training: nnU-Net's pseudo Dice of the student as built, on 24 fixed validation patches of "
                  "its fold (the same for every start). Layer error: each refitted layer's squared error against the "
                  "teacher's output at the kept channels over the target's variance, mean over layers, before and "
                  "after the least-squares refit (calibration patches).", ""]
    else:
        lines += [markdown_table(results), "", "## ReCo-KD against no KD at each width", "",
                  width_table(results), ""]
    for title, table in (("Dice by structure size", structure_size_table(results)),
                         ("Training", training_table(results))):
        if table is not None:
            lines += [f"## {title}", "", table, ""]
    if notes := notes_section(results):
        lines += [*notes, ""]
    lines += [f"![{plot.replace('_', ' ')}]({file})" for plot, file in plot_files.items()] + [""]
    return "\n".join(lines)


def kd_weight_table(results: dict) -> str:
    """One row per model: lambda, Dice per class, mean Dice and its difference to the plain student, HD95."""
    models = results["models"]
    classes = list(next(iter(models.values()))["dice_per_class"])
    plain = models.get(PLAIN, {}).get("mean_dice")
    header = ["Model", "λ", *[f"Dice {c} (%)" for c in classes], "Mean Dice (%)", "vs no KD (points)",
              "Mean HD95 (mm)"]
    rows = []
    for key, model in models.items():
        weight, dice = model.get("kd_weight"), model.get("mean_dice")
        rows.append([model_label(key), MISSING if weight is None else f"{weight:g}",
                     *[dice_percent(model["dice_per_class"].get(c)) for c in classes], dice_percent(dice),
                     points_text(dice, plain), number_text(model.get("mean_hd95_mm"), 2)])
    return markdown_rows(header, rows, left_columns=2)


def start_table(results: dict) -> str:
    """One row per student of an init study: its start, layer error, pseudo Dice at epoch 0, 1 and last, test Dice."""
    models = results["models"]
    classes = list(next(iter(models.values()))["dice_per_class"])
    header = ["Model", "Start", "Channels by", "Refit", "Learning rate", "Layer error (sliced → refitted)",
              *[f"Before training {c} (%)" for c in classes], "First epoch ≥ 10 %", "Pseudo Dice, epoch 1 (%)",
              "Pseudo Dice, last epoch (%)", "Test mean Dice (%)"]
    rows = []
    for key, model in models.items():
        probe, start = model.get("before_training"), model.get("start")
        if probe is None or start is None:
            continue
        inherited = start["init"] == "teacher"
        record, inheritance = model.get("training") or {}, probe.get("inheritance") or {}
        error = (f"{inheritance['layer_error_sliced']:.3f} → {inheritance['layer_error_refitted']:.3f}"
                 if inheritance.get("layer_error_refitted") is not None else MISSING)
        pseudo = record.get("pseudo_dice") or []
        rows.append([model_label(key), start["init"], start["init_importance"] if inherited else MISSING,
                     start["init_refit"] if inherited else MISSING, f"{start['learning_rate']:g}", error,
                     *[dice_percent(d) for d in probe["pseudo_dice_per_class"]], first_learned_epoch(pseudo),
                     dice_percent(pseudo[0] if pseudo else None), dice_percent(pseudo[-1] if pseudo else None),
                     dice_percent(model.get("mean_dice"))])
    return markdown_rows(header, rows, left_columns=5)


def width_table(results: dict) -> str:
    """Per width, widest first: parameters vs the teacher, plain and ReCo-KD Dice and HD95, the gain, CT speed-up."""
    models = results["models"]
    teacher = next((m for m in models.values() if m.get("mode") == "teacher"), {})
    by_width: dict[str, dict[str, dict]] = {}
    for model in models.values():
        if model.get("mode") in ("none", "recokd"):
            by_width.setdefault(model["width"], {})[model["mode"]] = model
    header = ["Width", "Params vs teacher", "Dice, no KD (%)", "Dice, ReCo-KD (%)", "ReCo-KD − no KD (points)",
              "HD95, no KD (mm)", "HD95, ReCo-KD (mm)", "CT speed-up"]
    rows = []
    for width in results.get("widths", by_width):
        plain, recokd = by_width[width].get("none", {}), by_width[width].get("recokd", {})
        rows.append([width, ratio_text(recokd.get("params") or plain.get("params"), teacher.get("params")),
                     dice_percent(plain.get("mean_dice")), dice_percent(recokd.get("mean_dice")),
                     points_text(recokd.get("mean_dice"), plain.get("mean_dice")),
                     number_text(plain.get("mean_hd95_mm"), 2), number_text(recokd.get("mean_hd95_mm"), 2),
                     speedup_text(teacher.get("ct_cpu_latency_s"), recokd.get("ct_cpu_latency_s"))])
    return markdown_rows(header, rows, left_columns=1)

