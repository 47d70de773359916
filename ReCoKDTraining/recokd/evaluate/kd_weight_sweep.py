"""A lambda sweep beside a finished benchmark: ReCo-KD students at other KD weights, scored in one run.

The benchmark trains one ReCo-KD student at the method's lambda = 0.01. When it ends no better
than the plain student, the first question is whether the distillation term is simply too
weak next to nnU-Net's segmentation loss. This sweep answers it without retraining anything
the benchmark has: it reuses the benchmark's teacher, preprocessed data, split, width,
schedule, seed and every other KD option, trains one more ReCo-KD student per extra lambda
(each in a results folder of its own, since nnU-Net names result folders by trainer and
plans only; side by side on a GPU, as the benchmark's students), and scores them together
with the benchmark's teacher, plain and lambda = 0.01 students on the same held-out cases
with the same evaluation.

Results are JSON-ready: ``{benchmark, created, device, schedule, width, seed, options,
kd_weights: [...], models: {key: {kd_weight, mean_dice, dice_per_class, hd95_per_class,
mean_hd95_mm, cases, training}}}``; :func:`write_sweep_report` turns them into Markdown and plots.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from fractions import Fraction
from functools import partial
from pathlib import Path

import torch

from recokd.distill.options import KDOptions
from recokd.errors import RecokdError
from recokd.evaluate.benchmark_data import held_out_cases
from recokd.evaluate.comparison import evaluate_models
from recokd.evaluate.concurrent_training import train_concurrently
from recokd.evaluate.environment import machine_description, package_versions
from recokd.evaluate.plots import SWEEP_PREFIX, model_label, plot_dice_vs_kd_weight, plot_training
from recokd.evaluate.report import (
    MISSING,
    PLAIN,
    RECOKD,
    TEACHER,
    dice_percent,
    json_ready,
    markdown_rows,
    structure_size_table,
    training_table,
)
from recokd.evaluate.training_record import training_record
from recokd.nnunet.student_plans import student_plans_identifier
from recokd.nnunet.training import Schedule
from recokd.workspace import Workspace

log = logging.getLogger(__name__)

SWEEP_FOLDER = "kd_weight_sweep"  # inside the benchmark's work directory
REFERENCE_MODELS = (TEACHER, PLAIN, RECOKD)  # the benchmark's own packages, scored again beside the sweep


def sweep_key(kd_weight: float) -> str:
    """Model key of the ReCo-KD student trained with ``kd_weight`` (``student_recokd_kd0.1``)."""
    return f"{SWEEP_PREFIX}{kd_weight:g}"


def run_kd_weight_sweep(work_dir: Path, kd_weights: Sequence[float], device: str = "auto",
                        threads: int | None = None, mirroring: bool = True) -> dict:
    """Train a ReCo-KD student per weight in ``kd_weights`` next to the benchmark in ``work_dir``; score all.

    ``work_dir`` must hold a finished ``recokd benchmark`` run (its settings, teacher and
    packages); the weights it already has (its own lambda) are not trained again. Finished
    sweep trainings are reused and interrupted ones resumed, as in the benchmark.
    """
    from recokd.device import resolve_device
    from recokd.evaluate.protocol import (
        CONFIGURATION,
        DATASETS,
        STUDENT_TRAINERS,
        STUDENTS,
        export_model,
        train_student,
    )

    work_dir = Path(work_dir).resolve()
    settings = _benchmark_settings(work_dir)
    spec = DATASETS[settings["dataset"]]
    base_options = KDOptions.from_dict(settings["kd_options"])
    schedule = Schedule(**settings["preset"]["training"])
    width, seed = Fraction(settings["width"]), int(settings["seed"])
    benchmark = Workspace.under(work_dir, respect_environment=False)
    packages = {key: work_dir / "packages" / f"{key}.recokd.zip" for key in REFERENCE_MODELS}
    teacher_folder = benchmark.results / spec.folder / f"nnUNetTrainer__nnUNetPlans__{CONFIGURATION}"
    missing = [str(path) for path in [*packages.values(), teacher_folder / "plans.json"] if not path.is_file()]
    if missing:
        raise RecokdError(f"{work_dir} holds no finished benchmark (missing: {', '.join(missing)}); "
                          "run recokd benchmark with this --work-dir first.")
    weights = sorted({float(w) for w in kd_weights} - {base_options.kd_weight})
    if not weights:
        raise RecokdError(f"No new KD weight to try: the benchmark already has lambda = {base_options.kd_weight:g}.")
    device = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(threads)  # training and evaluation alike, as in the benchmark
    teacher_plans = json.loads((teacher_folder / "plans.json").read_text())["plans_name"]
    student_plans = student_plans_identifier(teacher_plans, width)
    folders = {TEACHER: teacher_folder} | {
        key: benchmark.results / spec.folder / f"{STUDENT_TRAINERS[mode]}__{student_plans}__{CONFIGURATION}"
        for key, mode in STUDENTS.items() if key in REFERENCE_MODELS}

    workspaces = {sweep_key(w): Workspace(benchmark.root, benchmark.raw, benchmark.preprocessed,
                                          work_dir / SWEEP_FOLDER / sweep_key(w) / "nnUNet_results") for w in weights}
    jobs = {key: partial(train_student, key, "recokd", workspaces[key], teacher_folder, spec.folder, student_plans,
                         width, replace(base_options, kd_weight=weight), schedule, device, seed)
            for key, weight in zip(workspaces, weights)}
    if device.type == "cuda":  # side by side, as the benchmark's students (a GPU idles behind augmentation)
        log.info("== training %s concurrently", ", ".join(jobs))
        trained = train_concurrently(jobs)
    else:
        trained = {}
        for key, job in jobs.items():
            log.info("== training %s", key)
            trained[key] = job()
    packages.update({key: export_model(folder, workspaces[key], key) for key, folder in trained.items()})
    folders.update(trained)
    benchmark.activate()

    cases = held_out_cases(benchmark.raw / spec.folder)[: settings["preset"]["max_test_cases"]]
    log.info("== evaluating %d models on %d test cases (CPU)", len(packages), len(cases))
    models = evaluate_models(packages, cases, "cpu", threads, mirroring)
    lambdas = {TEACHER: None, PLAIN: 0.0, RECOKD: base_options.kd_weight} | {sweep_key(w): w for w in weights}
    for key, entry in models.items():
        entry["kd_weight"] = lambdas[key]
        entry["training"] = training_record(folders[key])
    return {
        "benchmark": f"{settings['dataset']}_kd_weight_sweep",
        "title": f"{spec.title}: KD weight sweep",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": machine_description(device),
        "schedule": {"preset": settings["preset"]["name"], **settings["preset"]["training"]},
        "width": str(width),
        "seed": seed,
        "options": {"kd": base_options.to_dict(), "evaluation": {"device": "cpu", "mirroring": mirroring,
                                                                 "threads": threads, "test_cases": len(cases)}},
        "versions": package_versions(),
        "kd_weights": sorted({base_options.kd_weight, *weights}),
        "models": models,
    }


def write_sweep_report(results: dict, out_dir: Path, name: str) -> dict[str, Path]:
    """``<name>.json``, ``<name>.md`` and ``<name>_dice_vs_kd_weight.png`` in ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = json_ready(results)
    plots = {"dice_vs_kd_weight": plot_dice_vs_kd_weight(results, out_dir / f"{name}_dice_vs_kd_weight.png"),
             "training": plot_training(results, out_dir / f"{name}_training.png")}
    plots = {kind: path for kind, path in plots.items() if path is not None}
    paths = {"json": out_dir / f"{name}.json", "markdown": out_dir / f"{name}.md", **plots}
    paths["json"].write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(sweep_markdown(results, {kind: path.name for kind, path in plots.items()}),
                                 encoding="utf-8")
    return paths


def sweep_markdown(results: dict, plot_files: dict[str, str]) -> str:
    """The sweep's report: one row per model (lambda, Dice per class, mean Dice, mean HD95), sizes, training, plots."""
    models = results["models"]
    classes = list(next(iter(models.values()))["dice_per_class"])
    plain = models.get(PLAIN, {}).get("mean_dice")
    header = ["Model", "λ", *[f"Dice {c} (%)" for c in classes], "Mean Dice (%)", "vs no KD (points)",
              "Mean HD95 (mm)"]
    rows = []
    for key, model in models.items():
        weight, dice = model.get("kd_weight"), model.get("mean_dice")
        rows.append([
            model_label(key), MISSING if weight is None else f"{weight:g}",
            *[dice_percent(model["dice_per_class"].get(c)) for c in classes], dice_percent(dice),
            MISSING if dice is None or plain is None else f"{100 * (dice - plain):+.2f}",
            MISSING if model.get("mean_hd95_mm") is None else f"{model['mean_hd95_mm']:.2f}",
        ])
    schedule = results.get("schedule", {})
    lines = [f"# {results.get('title', 'KD weight sweep')}", "",
             f"Measured {results.get('created')} on {results.get('device', {}).get('cpu', '?')}, training on "
             f"{results.get('device', {}).get('training_device', '?')}; schedule `{schedule.get('preset')}` "
             f"({schedule.get('epochs')} epochs × {schedule.get('iterations_per_epoch')} iterations), student width "
             f"{results.get('width')}, seed {results.get('seed')}. Every student has the benchmark's options but λ; "
             "all models scored in this run on the benchmark's held-out cases.", "",
             markdown_rows(header, rows, left_columns=2), ""]
    for title, table in (("Dice by structure size", structure_size_table(results)),
                         ("Training", training_table(results))):
        if table is not None:
            lines += [f"## {title}", "", table, ""]
    lines += [f"![{kind.replace('_', ' ')}]({file})" for kind, file in plot_files.items()] + [""]
    return "\n".join(lines)


def _benchmark_settings(work_dir: Path) -> dict:
    path = work_dir / "benchmark_config.json"
    if not path.is_file():
        raise RecokdError(f"{work_dir} is not a benchmark work directory ({path.name} missing): give the "
                          "--work-dir of a finished recokd benchmark run.")
    return json.loads(path.read_text())
