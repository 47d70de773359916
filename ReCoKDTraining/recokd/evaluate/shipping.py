"""Ship a finished benchmark's students as model packages whose cards carry their data and measured accuracy.

The benchmark exports every training (``<work-dir>/packages``) with a bare card. A package
that goes to users (``Resources/Models``) also says what it was trained on, under which
licence and whom to cite, and how well it did on the benchmark's held-out cases: its own test
Dice, its arm's mean over seeds, and the paired comparison with the plain student. Everything
on the card is copied from the results JSON, never typed.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

from recokd.errors import RecokdError
from recokd.evaluate.report import PLAIN, RECOKD, comparison, read_results
from recokd.workspace import Workspace

log = logging.getLogger(__name__)

SHIPPED = {RECOKD: "recokd", PLAIN: "no-kd"}  # arm -> how the package name says it
MAX_PACKAGE_BYTES = 2 * 1024 * 1024


def ship_students(results_path: Path, work_dir: Path, out_dir: Path, arms=tuple(SHIPPED)) -> list[Path]:
    """Export each arm's first-seed student of the benchmark in ``work_dir`` (results ``results_path``) into ``out_dir``."""
    from recokd.evaluate.protocol import CONFIGURATION, DATASETS, FOLD, STUDENT_TRAINERS, student_workspace
    from recokd.nnunet.student_plans import student_plans_identifier
    from recokd.package.export import export_package

    results = read_results(results_path)
    dataset = results["benchmark"]
    spec = DATASETS[dataset]
    workspace = Workspace.under(work_dir, respect_environment=False)
    width = results["options"]["width"]
    plans = student_plans_identifier("nnUNetPlans", Fraction(width))
    written = []
    for key in arms:
        model = results["models"][key]
        run = model["runs"][0]
        folder = (student_workspace(workspace, key, run["seed"]).results / spec.folder
                  / f"{STUDENT_TRAINERS[model['mode']]}__{plans}__{CONFIGURATION}")
        name = f"{dataset}-{SHIPPED[key]}-x{width.replace('/', 'of')}"
        card = {
            "description": (f"{dataset.capitalize()} student at width {width} of its nnU-Net teacher, "
                            f"{_trained_how(model)}; ReCoKD benchmark (schedule {results['schedule']['preset']}, "
                            f"seed {run['seed']})."),
            "training_data": {"dataset": spec.folder, "source": spec.source, "licence": spec.licence,
                              "citation": spec.citation, "num_training": results["split"]["num_train"],
                              "split_seed": results["split"]["seed"], "fold": FOLD,
                              "epochs": results["schedule"]["epochs"]},
            "licence": {"code": "Apache-2.0", "training_data": spec.licence},
            "seed": run["seed"],
            "benchmark": {"results": Path(results_path).name, "created": results.get("created"), "model": key},
        }
        metrics = {
            "test_cases": len(run["cases"]),
            "test_mean_dice": run["mean_dice"],
            "test_dice_per_class": run["dice_per_class"],
            "test_mean_hd95_mm": run["mean_hd95_mm"],
            "arm_mean_dice_over_seeds": model["mean_dice"],
            "arm_mean_dice_sd": model.get("mean_dice_sd"),
            "arm_seeds": model.get("seeds"),
        }
        paired = comparison(results, RECOKD, PLAIN)
        if paired is not None:
            metrics["recokd_minus_no_kd_dice"] = {k: paired[k] for k in ("mean", "ci_low", "ci_high", "p_value",
                                                                          "cases")}
        out = export_package(folder, Path(out_dir) / f"{name}.recokd.zip", fold=FOLD, name=name, metrics=metrics,
                             extra_card=card, overwrite=True)
        if out.stat().st_size > MAX_PACKAGE_BYTES:
            raise RecokdError(f"{out} is {out.stat().st_size:,} bytes, above the {MAX_PACKAGE_BYTES:,} a shipped "
                              "student may take.")
        log.info("Shipped %s (%s bytes)", out, f"{out.stat().st_size:,}")
        written.append(out)
    return written


def _trained_how(model: dict) -> str:
    start = "started from the pruned teacher" if model.get("init") == "teacher" else "from random initialisation"
    how = {"recokd": "distilled with ReCo-KD", "logit": "distilled with logit KD", "none": "trained without KD"}
    return f"{how[model['mode']]}, {start}"
