"""Benchmark results as files: ``<name>.json``, a Markdown report and PNG plots beside it.

The JSON is the record; everything else is generated from it, so no figure is ever typed by
hand. Its schema (``None`` wherever something was not measured or is undefined)::

    benchmark, title, created, dataset{...}, device{...}, schedule{...}, split{seed, train, test, ...},
    seeds{...}, versions{package: version}, options{kd, width, evaluation, ct_volume, ...},
    notes[str],
    models{key: {params, flops, mean_dice, dice_per_class{name}, hd95_per_class{name}, mean_hd95_mm,
                 cpu_latency_s, gpu_latency_s, ct_cpu_latency_s, peak_rss_mb, cases[...],
                 training{epochs, seconds, pseudo_dice[...], ...}
                 [, mode, init, seeds[...], mean_dice_sd, mean_hd95_sd, runs[{seed, ..., training}]]}},
    [comparisons[{a, b, metric, mean, ci_low, ci_high, p_value, cases, verdict}],]
    kd_step_ratio, kd_step_timing{kd_step_s, plain_step_s, device, ...}

Model keys are ``teacher``, ``student_recokd``, ``student_logitkd``, ``student_plain`` and
``student_plain_random``. A student arm trained with several seeds holds the seed means and
every seed under ``runs``; ``comparisons`` are paired per-case differences over the seeds
(:mod:`recokd.evaluate.statistics`); results written before seeds existed have neither.
Dice is stored in [0, 1] and shown in percent ("Dice points" are percentage points).
:func:`update_readme` puts :func:`markdown_table` between ``<!-- results:<name>:start -->``
and ``<!-- results:<name>:end -->`` in a README.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from recokd.errors import RecokdError
from recokd.evaluate.plots import model_label, structure_points, trainings, write_plots

log = logging.getLogger(__name__)

TEACHER, RECOKD, PLAIN, LOGIT = "teacher", "student_recokd", "student_plain", "student_logitkd"
PLAIN_RANDOM = "student_plain_random"  # no KD from nnU-Net's random initialisation (the others start from the teacher)
DICE_MARGIN_POINTS = 0.5  # ReCo-KD student within this many Dice points of the teacher ...
MAX_PARAM_RATIO = 0.1  # ... with at most this fraction of its parameters
DICE_GAIN_POINTS = 0.5  # ReCo-KD student at least this many points above the plain student
MIN_CT_SPEEDUP = 6.0  # student CPU latency on the CT-sized volume, teacher / student
MAX_STUDENT_RSS_MB = 4096.0  # 4 GB
MAX_GPU_STEP_RATIO = 1.6  # KD training step over plain step, on a GPU
MISSING = "–"
LEARNED_PSEUDO_DICE = 0.1  # a class counts as learned from the first epoch at this pseudo Dice (an untrained
# network guessing foreground everywhere scored up to 6 % on the phantom's kidneys)


@dataclass(frozen=True)
class TargetCheck:
    """One target of the benchmark, what was measured, and ``met`` / ``missed`` / ``not measured``."""

    target: str
    measured: str
    status: str


# ----------------------------------------------------------------------------- files
def write_report(results: dict, out_dir: Path, name: str | None = None) -> dict[str, Path]:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>_<plot>.png`` into ``out_dir``; returns the paths by kind."""
    out_dir = Path(out_dir)
    name = name or results["benchmark"]
    out_dir.mkdir(parents=True, exist_ok=True)
    results = json_ready(results)
    paths = {"json": out_dir / f"{name}.json"}
    paths["json"].write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    plots = write_plots(results, out_dir, name)
    paths["markdown"] = out_dir / f"{name}.md"
    paths["markdown"].write_text(markdown_report(results, {k: p.name for k, p in plots.items()}), encoding="utf-8")
    log.info("Wrote %s, %s and %d plots", paths["json"], paths["markdown"], len(plots))
    return paths | plots


def read_results(path: Path) -> dict:
    """A results JSON written by :func:`write_report`."""
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RecokdError(f"Cannot read benchmark results {path}: {error}") from error
    if not isinstance(results, dict) or not isinstance(results.get("models"), dict):
        raise RecokdError(f"{path} is not a benchmark results file (no 'models').")
    return results


def json_ready(value):
    """``value`` with NaN and infinities as ``None``, tuples as lists and other objects as strings."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if callable(getattr(value, "item", None)):  # numpy / torch scalars
        return json_ready(value.item())
    return str(value)


def update_readme(readme: Path, results_json: Path) -> bool:
    """Replace the README's block between the results markers with the table of ``results_json``.

    The block names the benchmark (``<!-- results:hippocampus:start -->``) and ends with a link
    to the full report; a seeded run adds its paired comparisons. Returns whether the README changed.
    """
    readme, results_json = Path(readme), Path(results_json)
    results = read_results(results_json)
    name = results_json.name.removesuffix(".json")
    start, end = f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise RecokdError(f"{readme} has no '{start}' ... '{end}' markers; add them where the table belongs.")
    report = Path(os.path.relpath(results_json.with_suffix(".md"), readme.parent)).as_posix()
    paired = comparisons_table(results)
    tables = markdown_table(results) + ("" if paired is None else f"\n\nPaired per-case differences over the "
                                       f"seeds (95 % bootstrap CI, Wilcoxon p):\n\n{paired}")
    block = f"{start}\n{tables}\n\n{_provenance(results)} Full report: [{report}]({report}).\n{end}"
    updated = pattern.sub(lambda _: block, text)
    if updated != text:
        readme.write_text(updated, encoding="utf-8")
    return updated != text


# ----------------------------------------------------------------------------- Markdown
def markdown_table(results: dict) -> str:
    """The results table (one row per model) in GitHub Markdown, from the results JSON alone."""
    models = results["models"]
    classes = list(next(iter(models.values()))["dice_per_class"])
    teacher = models.get(TEACHER, {})
    seeded = any("runs" in model for model in models.values())
    header = ["Model", *(["Start", "Seeds"] if seeded else []), "Params", "Params vs teacher", "GFLOPs / patch",
              *[f"Dice {c} (%)" for c in classes], "Mean Dice (%)", *[f"HD95 {c} (mm)" for c in classes],
              "CPU s / case", "GPU s / case", "CT volume CPU s", "CT speed-up", "Peak RSS (MB)"]
    rows = []
    for key, model in models.items():
        rows.append([
            model_label(key),
            *([START.get(model.get("init"), MISSING), str(len(model.get("runs") or [model]))] if seeded else []),
            _millions(model.get("params")),
            ratio_text(model.get("params"), teacher.get("params")),
            number_text(_scaled(model.get("flops"), 1e-9), 2),
            *[dice_percent(model["dice_per_class"].get(c)) for c in classes],
            dice_percent(model.get("mean_dice")) + _spread(model.get("mean_dice_sd")),
            *[number_text(model.get("hd95_per_class", {}).get(c), 2) for c in classes],
            number_text(model.get("cpu_latency_s"), 3),
            number_text(model.get("gpu_latency_s"), 3),
            number_text(model.get("ct_cpu_latency_s"), 1),
            speedup_text(teacher.get("ct_cpu_latency_s"), model.get("ct_cpu_latency_s")),
            number_text(model.get("peak_rss_mb"), 0),
        ])
    return markdown_rows(header, rows, left_columns=3 if seeded else 1)


START = {"teacher": "teacher", "random": "random"}  # a student's init option, as the table shows it


def _spread(sd: float | None) -> str:
    """`` ± sd`` of a Dice over seeds, in points; nothing for one seed."""
    return "" if sd is None else f" ± {100 * sd:.2f}"


def comparisons_table(results: dict) -> str | None:
    """One row per paired comparison and metric: mean difference, 95 % CI, Wilcoxon p, cases, verdict."""
    comparisons = results.get("comparisons")
    if not comparisons:
        return None
    header = ["Comparison (a − b)", "Metric", "Mean difference", "95 % CI", "Wilcoxon p", "Cases", "What it says"]
    rows = []
    for c in comparisons:
        scale, unit = (100.0, " points") if c["metric"] == "dice" else (1.0, " mm")
        name = f"{model_label(c['a'])} − {model_label(c['b'])}"
        if c.get("mean") is None:
            rows.append([name, METRIC_NAMES[c["metric"]], MISSING, MISSING, MISSING, "0", c["verdict"]])
            continue
        rows.append([name, METRIC_NAMES[c["metric"]], f"{scale * c['mean']:+.2f}{unit}",
                     f"{scale * c['ci_low']:+.2f} … {scale * c['ci_high']:+.2f}",
                     MISSING if c.get("p_value") is None else f"{c['p_value']:.3g}", str(c["cases"]),
                     VERDICTS[c["verdict"]].format(a=model_label(c["a"]), b=model_label(c["b"]))])
    return markdown_rows(header, rows, left_columns=2)


METRIC_NAMES = {"dice": "Dice", "hd95_mm": "HD95"}
VERDICTS = {"a better": "{a} better (CI excludes 0)", "a worse": "{a} worse (CI excludes 0)",
            "no evidence either way": "no evidence either way", "not measured": "not measured"}


def comparison(results: dict, a: str, b: str, metric: str = "dice") -> dict | None:
    """The recorded paired comparison ``a - b`` of ``metric``, if the results hold one with a value."""
    return next((c for c in results.get("comparisons") or []
                 if (c["a"], c["b"], c["metric"]) == (a, b, metric) and c.get("mean") is not None), None)


def markdown_rows(header: list[str], rows: list[list[str]], left_columns: int) -> str:
    """A GitHub Markdown table; the first ``left_columns`` columns left-aligned, the numbers right-aligned."""
    align = ["---"] * left_columns + ["---:"] * (len(header) - left_columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def structure_size_table(results: dict) -> str | None:
    """Dice of every structure against its size, smallest first: does distillation help the small ones?

    One row per structure: its mean reference volume and the number of test cases holding it,
    each model's mean Dice over those cases, and ReCo-KD minus the plain student in Dice
    points. ``None`` when the results hold no per-case volumes.
    """
    models = results["models"]
    points = {key: structure_points(model) for key, model in models.items()}
    reference = next((p for p in points.values() if p), None)
    if reference is None:
        return None
    header = ["Structure", "Mean volume (ml)", "Cases", *[f"Dice {model_label(k)} (%)" for k in models]]
    compare = RECOKD in models and PLAIN in models
    if compare:
        header.append("ReCo-KD − no KD (points)")
    by_volume = sorted(reference, key=lambda name: _mean([v for v, _ in reference[name]]))
    rows = []
    for name in by_volume:
        dice = {key: _mean([d for _, d in p.get(name, [])]) for key, p in points.items()}
        row = [name, number_text(_mean([v for v, _ in reference[name]]), 2), str(len(reference[name])),
               *[dice_percent(dice[key]) for key in models]]
        if compare:
            row.append(points_text(dice[RECOKD], dice[PLAIN]))
        rows.append(row)
    return markdown_rows(header, rows, left_columns=1)


def training_table(results: dict) -> str | None:
    """Per model: epochs, minutes, when it and each class first reached 10 % pseudo Dice, last and best, loss.

    ``None`` without training records. A network in nnU-Net's all-background phase has
    pseudo Dice 0; the first epoch at :data:`LEARNED_PSEUDO_DICE` or above says when it left
    that phase, and per class when each structure first appeared (``–``: never). The last
    epoch's training loss and its distillation share (lambda x L_KD, students only) say how
    much the distillation weighed against nnU-Net's Dice + CE.
    """
    trained = trainings(results)
    if not trained:
        return None
    classes = list(next(iter(results["models"].values()))["dice_per_class"])
    header = ["Model", "Epochs", "Training (min)", "First epoch ≥ 10 %",
              *[f"… {name}" for name in classes], "Pseudo Dice, last epoch (%)", "Pseudo Dice, best epoch (%)",
              "Training loss, last epoch", "… of which λ·L_KD"]
    rows = []
    for label, record in trained:
        per_class = [[epoch[index] for epoch in record["pseudo_dice_per_class"]] for index in range(len(classes))]
        rows.append([label, str(record["epochs"]), number_text(_scaled(record["seconds"], 1 / 60), 1),
                     first_learned_epoch(record["pseudo_dice"]), *[first_learned_epoch(c) for c in per_class],
                     dice_percent(record["pseudo_dice"][-1] if record["pseudo_dice"] else None),
                     dice_percent(max(record["pseudo_dice"], default=None)),
                     number_text(_last(record.get("train_loss")), 3), number_text(_last(record.get("kd_weighted")), 3)])
    return markdown_rows(header, rows, left_columns=1)


def first_learned_epoch(pseudo_dice: list[float]) -> str:
    """The first epoch (1-based) whose pseudo Dice reaches :data:`LEARNED_PSEUDO_DICE`, ``–`` if none does."""
    return next((str(epoch) for epoch, dice in enumerate(pseudo_dice, 1) if dice >= LEARNED_PSEUDO_DICE), MISSING)


def target_checks(results: dict) -> list[TargetCheck]:
    """The issue's targets, each judged on the measured numbers (``not measured`` when one is missing)."""
    models = results["models"]
    teacher, recokd, plain = models.get(TEACHER, {}), models.get(RECOKD, {}), models.get(PLAIN, {})
    checks = []

    dice_teacher, dice_recokd, dice_plain = teacher.get("mean_dice"), recokd.get("mean_dice"), plain.get("mean_dice")
    gap = _difference(dice_teacher, dice_recokd)
    share = _quotient(recokd.get("params"), teacher.get("params"))
    checks.append(_check(
        f"ReCo-KD student within {DICE_MARGIN_POINTS} Dice points of the teacher with ≤ 1/10 of its parameters",
        None if gap is None or share is None else
        f"{points_text(dice_recokd, dice_teacher)} points vs teacher, {100 * share:.1f} % of its parameters",
        None if gap is None or share is None else 100 * gap <= DICE_MARGIN_POINTS and share <= MAX_PARAM_RATIO))

    if results.get("comparisons"):  # seeds and paired statistics: judged on the interval
        for baseline in (PLAIN, PLAIN_RANDOM):
            if baseline in models:
                checks.append(_gain_check(results, baseline))
    else:
        gain = _difference(dice_recokd, dice_plain)
        checks.append(_check(
            f"ReCo-KD student ≥ {DICE_GAIN_POINTS} Dice points above the plain student",
            None if gain is None else f"{points_text(dice_recokd, dice_plain)} points",
            None if gain is None else 100 * gain >= DICE_GAIN_POINTS))

    if inherited := _inherited_first_epochs(models):
        slowest = min(inherited)
        checks.append(_check(
            f"Every teacher-started student leaves the all-background phase in epoch 1 (pseudo Dice ≥ "
            f"{100 * LEARNED_PSEUDO_DICE:g} %)",
            f"lowest epoch-1 pseudo Dice {dice_percent(slowest)} % over {len(inherited)} trainings",
            slowest >= LEARNED_PSEUDO_DICE))

    hd_recokd, hd_plain = recokd.get("mean_hd95_mm"), plain.get("mean_hd95_mm")
    known = hd_recokd is not None and hd_plain is not None
    checks.append(_check(
        "ReCo-KD student's HD95 no worse than the plain student's (mean over classes)",
        f"{hd_recokd:.2f} mm vs {hd_plain:.2f} mm" if known else None,
        hd_recokd <= hd_plain if known else None))

    speedup = _quotient(teacher.get("ct_cpu_latency_s"), recokd.get("ct_cpu_latency_s"))
    checks.append(_check(
        f"Student ≥ {MIN_CT_SPEEDUP:g}× faster than the teacher on the CT-sized volume (CPU, same run)",
        None if speedup is None else f"{speedup:.1f}×",
        None if speedup is None else speedup >= MIN_CT_SPEEDUP))

    rss = recokd.get("peak_rss_mb")
    checks.append(_check(
        f"Student peak RSS ≤ {MAX_STUDENT_RSS_MB / 1024:g} GB on the CT-sized volume",
        None if rss is None else f"{rss:.0f} MB",
        None if rss is None else rss <= MAX_STUDENT_RSS_MB))

    timing = results.get("kd_step_timing") or {}
    ratio, on_gpu = results.get("kd_step_ratio"), str(timing.get("device", "")).startswith("cuda")
    measured = None if ratio is None else f"{ratio:.2f}× on {timing.get('device', 'an unknown device')}"
    checks.append(_check(f"KD training step ≤ {MAX_GPU_STEP_RATIO}× the plain step on a GPU", measured,
                         ratio <= MAX_GPU_STEP_RATIO if ratio is not None and on_gpu else None))
    return checks


def _gain_check(results: dict, baseline: str) -> TargetCheck:
    """ReCo-KD at least :data:`DICE_GAIN_POINTS` above ``baseline`` on the seed mean, with the paired CI above 0."""
    found = comparison(results, RECOKD, baseline)
    measured = None if found is None else (
        f"{100 * found['mean']:+.2f} points, 95 % CI {100 * found['ci_low']:+.2f} … {100 * found['ci_high']:+.2f}"
        + ("" if found.get("p_value") is None else f", Wilcoxon p {found['p_value']:.3g}"))
    met = None if found is None else 100 * found["mean"] >= DICE_GAIN_POINTS and found["ci_low"] > 0
    return _check(f"ReCo-KD student ≥ {DICE_GAIN_POINTS} Dice points above the {GAIN_BASELINES[baseline]}, "
                  "95 % CI above 0", measured, met)


def _inherited_first_epochs(models: dict) -> list[float]:
    """Epoch-1 pseudo Dice of every training (every seed) of the students started from the teacher."""
    return [run["training"]["pseudo_dice"][0]
            for model in models.values() if model.get("init") == "teacher"
            for run in model.get("runs") or [model]
            if (run.get("training") or {}).get("pseudo_dice")]


GAIN_BASELINES = {PLAIN: "no-KD student started from the teacher",
                  PLAIN_RANDOM: "no-KD student from random init (stock nnU-Net)"}


def markdown_report(results: dict, plot_files: dict[str, str]) -> str:
    """The whole report: provenance, results table, targets, notes, plots and set-up."""
    lines = [f"# {results.get('title', 'ReCo-KD benchmark')}", "", _provenance(results), ""]
    if results.get("schedule", {}).get("preset") == "smoke":
        lines += ["> **Smoke run**: a pipeline check with a few training iterations. The numbers below say "
                  "nothing about the method.", ""]
    lines += ["## Results", "", markdown_table(results), "",
              "Dice and HD95 are means over the test cases (a class absent from both the reference and the "
              "prediction is left out; HD95 is undefined when either is empty). Latency per case is the "
              "prediction alone, after a warm-up. The CT-sized volume is measured in a fresh process per "
              "model; peak RSS is that process's high-water mark (1 MB = 2^20 bytes).", "",
              "## Targets", "", "| Target | Measured | Status |", "|---|---|---|"]
    lines += [f"| {c.target} | {c.measured} | {c.status} |" for c in target_checks(results)]
    paired = comparisons_table(results)
    if paired is not None:
        lines += ["", "## Paired comparisons", "",
                  "Per test case the metric's mean over classes, averaged over each arm's seeds; then per case "
                  "the difference a − b, its mean over cases with a 95 % bootstrap CI (BCa, 10,000 resamples) and "
                  "the two-sided Wilcoxon signed-rank p (scipy.stats). Only an interval that excludes 0 is "
                  "evidence of a difference. For HD95 lower is better.", "", paired]
    sizes = structure_size_table(results)
    if sizes is not None:
        lines += ["", "## Dice by structure size", "",
                  "Each structure's mean Dice over the test cases that hold it, smallest structure first "
                  "(volumes from the reference labels).", "", sizes]
    training = training_table(results)
    if training is not None:
        lines += ["", "## Training", "",
                  "nnU-Net's validation pseudo Dice (a student's EMA weights; 0 while a network predicts background "
                  "everywhere) and wall time of each training on the training device.", "", training]
    if notes := notes_section(results):
        lines += ["", *notes]
    lines += ["", "## Plots", ""] + [f"![{kind.replace('_', ' ')}]({file})" for kind, file in plot_files.items()]
    lines += ["", "## Set-up", "", "```json", json.dumps(_setup(results), indent=2), "```", ""]
    return "\n".join(lines)


def notes_section(results: dict) -> list[str]:
    """The ``## Notes`` section: the analysis a person added to the JSON's ``notes``; ``[]`` without notes."""
    notes = results.get("notes") or []
    return ["## Notes", "", *[f"- {note}" for note in notes]] if notes else []


def _provenance(results: dict) -> str:
    """One sentence on when, where and how the numbers were measured (the parts the results hold)."""
    device, schedule, split = results.get("device", {}), results.get("schedule", {}), results.get("split", {})
    parts = [f"Measured {results['created']}" if results.get("created") else "Measured"]
    if device.get("cpu"):
        gpu = f", GPU {device['gpu']}" if device.get("gpu") else ""
        parts.append(f"on {device['cpu']} ({device.get('logical_cores', '?')} logical cores{gpu})")
    if device.get("training_device"):
        parts.append(f"training on {device['training_device']}")
    text = " ".join(parts[:2]) + "".join(f", {part}" for part in parts[2:])
    if schedule:
        text += (f"; schedule `{schedule.get('preset')}` ({schedule.get('epochs')} epochs × "
                 f"{schedule.get('iterations_per_epoch')} iterations)")
    if split:
        evaluated = results.get("options", {}).get("evaluation", {}).get("test_cases")
        subset = f" ({evaluated} evaluated)" if evaluated is not None and evaluated != split.get("num_test") else ""
        text += (f"; {split.get('num_train')} training / {split.get('num_test')} test cases{subset}, "
                 f"split seed {split.get('seed')}")
    return "" if text == "Measured" else text + "."


def _setup(results: dict) -> dict:
    keys = ("dataset", "device", "schedule", "seeds", "versions", "options", "kd_step_timing")
    return {key: results[key] for key in keys if key in results}


def _check(target: str, measured: str | None, met: bool | None) -> TargetCheck:
    status = "not measured" if met is None else ("met" if met else "**missed**")
    return TargetCheck(target, measured or MISSING, status)


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _quotient(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _last(values: list[float] | None) -> float | None:
    return values[-1] if values else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def dice_percent(value: float | None) -> str:
    """A Dice in [0, 1] as percent with two decimals (``–`` when undefined)."""
    return number_text(_scaled(value, 100), 2)


def number_text(value: float | None, digits: int) -> str:
    return MISSING if value is None else f"{value:,.{digits}f}"


def points_text(dice: float | None, reference: float | None) -> str:
    """``dice - reference`` (both in [0, 1]) as signed Dice points, two decimals; a gap that rounds to zero is ``+0.00``."""
    difference = _difference(dice, reference)
    if difference is None:
        return MISSING
    return f"{round(100 * difference, 2) + 0.0:+.2f}"  # + 0.0 turns a rounded -0.0 into 0.0


def _millions(value: int | None) -> str:
    return MISSING if value is None else f"{value / 1e6:.2f} M"


def ratio_text(value: float | None, reference: float | None) -> str:
    share = _quotient(value, reference)
    return MISSING if share is None else f"{share:.3f}×"


def speedup_text(teacher: float | None, model: float | None) -> str:
    speedup = _quotient(teacher, model)
    return MISSING if speedup is None else f"{speedup:.1f}×"

