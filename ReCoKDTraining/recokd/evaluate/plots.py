"""The benchmark's figures, drawn from its results JSON alone (never from typed numbers).

* Dice against parameters, and against latency per case: the accuracy/cost trade-off;
* Dice per class as grouped bars;
* Dice of every structure in every test case against that structure's volume (log scale),
  with each structure's mean: does distillation help the small structures?
* nnU-Net's pseudo Dice per epoch of every model's training, per class;
* for a KD-weight sweep, the ReCo-KD students' Dice against lambda beside the teacher and the
  plain student; for a width sweep, Dice and CT-volume latency of the students against their
  parameter count, beside the teacher.

Dice is shown in percent, as papers report it. Every figure is drawn in Matplotlib's default
style, whatever the process has set globally (nnU-Net's progress plot switches on seaborn's
large-font theme for the whole process).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullFormatter  # noqa: E402

MODEL_LABELS = {
    "teacher": "Teacher (nnU-Net)",
    "student_recokd": "Student, ReCo-KD",
    "student_logitkd": "Student, logit KD",
    "student_plain": "Student, no KD",
    "student_plain_random": "Student, no KD, random init",
}
MODEL_COLOURS = {"teacher": "tab:blue", "student_recokd": "tab:red", "student_logitkd": "tab:orange",
                 "student_plain": "tab:gray", "student_plain_random": "black"}
MARKERS = "osD^v<>Px*"
CLASS_COLOURS = plt.get_cmap("Dark2").colors  # classes in the sweep plot: none of the models' colours
# A sweep's student (recokd.evaluate.student_sweep): student_recokd_kd0.1, student_plain_w8.
SWEEP_KEY = re.compile(r"^(?P<model>student_recokd|student_plain)(?:_w(?P<width>\d+))?(?:_kd(?P<kd>.+))?"
                       r"(?:_init-(?P<init>.+))?$")


def model_label(key: str) -> str:
    """A model key as people read it; a sweep's student names its width (``×1/8``) or its lambda."""
    sweep = SWEEP_KEY.match(key)
    if key in MODEL_LABELS or sweep is None:
        return MODEL_LABELS.get(key, key)
    label = MODEL_LABELS[sweep["model"]]
    if sweep["width"]:
        label = label.replace("Student", f"Student ×1/{sweep['width']}", 1)
    return label + (f", λ {sweep['kd']}" if sweep["kd"] else "") + (f", start {sweep['init']}" if sweep["init"] else "")


def _colour(key: str, index: int) -> str:
    sweep = SWEEP_KEY.match(key)
    return MODEL_COLOURS.get(sweep["model"] if sweep else key, f"C{index}")


def trainings(results: dict) -> list[tuple[str, dict]]:
    """``(label, training record)`` of every training: one per seed of a model trained with several."""
    found = []
    for key, model in results["models"].items():
        for run in model.get("runs") or [model]:
            if run.get("training"):
                seed = f", seed {run['seed']}" if "runs" in model else ""
                found.append((model_label(key) + seed, run["training"]))
    return found


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _log_x(ax, formatter) -> None:
    """Log-scaled x axis labelled at 1, 2 and 5 of every decade, so a narrow range still has labels."""
    ax.set_xscale("log")
    _label_log_axis(ax.xaxis, formatter)


def _label_log_axis(axis, formatter) -> None:
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(formatter)
    axis.set_minor_formatter(NullFormatter())


PLAIN_NUMBER = FuncFormatter(lambda value, _: f"{value:g}")


def _default_style(plot: Callable[[dict, Path], Path]) -> Callable[[dict, Path], Path]:
    @functools.wraps(plot)
    def drawn(results: dict, path: Path) -> Path:
        with plt.style.context("default"):
            return plot(results, path)

    return drawn


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _trade_off(results: dict, path: Path, x_of, x_label: str, title: str, formatter=PLAIN_NUMBER) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for index, (key, model) in enumerate(results["models"].items()):
        x, y = x_of(model), _percent(model.get("mean_dice"))
        if x is not None and y is not None:
            ax.scatter([x], [y], s=70, color=_colour(key, index), marker=MARKERS[index % len(MARKERS)],
                       label=model_label(key), zorder=3)
    _log_x(ax, formatter)
    ax.set_xlabel(x_label)
    ax.set_ylabel("mean Dice (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


@_default_style
def plot_dice_vs_params(results: dict, path: Path) -> Path:
    """Mean Dice against the parameter count (log scale), one point per model."""
    return _trade_off(results, path, lambda m: m.get("params"), "parameters (log scale)", "Accuracy vs size",
                      EngFormatter())


def latency_of(model: dict) -> float | None:
    """Seconds per test case: on the CPU when measured there, else on the GPU."""
    return model.get("cpu_latency_s") if model.get("cpu_latency_s") is not None else model.get("gpu_latency_s")


@_default_style
def plot_dice_vs_latency(results: dict, path: Path) -> Path:
    """Mean Dice against the latency per test case (log scale), one point per model."""
    device = "CPU" if any(m.get("cpu_latency_s") is not None for m in results["models"].values()) else "GPU"
    return _trade_off(results, path, latency_of, f"{device} latency per test case, s (log scale)",
                      "Accuracy vs speed")


@_default_style
def plot_dice_per_class(results: dict, path: Path) -> Path:
    """Grouped bars: mean Dice of each class, one bar per model."""
    models = results["models"]
    classes = list(next(iter(models.values()))["dice_per_class"])
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(classes) * len(models) + 2), 4.5))
    for index, (key, model) in enumerate(models.items()):
        heights = [_percent(model["dice_per_class"].get(name)) or 0.0 for name in classes]
        positions = [c + (index - (len(models) - 1) / 2) * width for c in range(len(classes))]
        bars = ax.bar(positions, heights, width, color=_colour(key, index), label=model_label(key))
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(range(len(classes)), classes, rotation=20 if len(classes) > 3 else 0)
    ax.set_ylabel("Dice (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Dice per class (mean over test cases)", fontsize=10)
    return _save(fig, path)


def structure_points(model: dict) -> dict[str, list[tuple[float, float]]]:
    """``{structure: [(reference volume ml, Dice), ...]}`` over the cases where both are defined."""
    points: dict[str, list[tuple[float, float]]] = {}
    for case in model.get("cases", []):
        for name, dice in case["dice"].items():
            volume = case["volume_ml"].get(name)
            if dice is not None and volume:
                points.setdefault(name, []).append((volume, dice))
    return points


@_default_style
def plot_dice_vs_volume(results: dict, path: Path) -> Path:
    """Dice of each structure in each case against its volume (log x); large markers: each structure's mean."""
    fig, ax = plt.subplots(figsize=(7, 4.8))
    structures: list[str] = []
    for index, (key, model) in enumerate(results["models"].items()):
        colour = _colour(key, index)
        means = []
        for name, points in structure_points(model).items():
            if name not in structures:
                structures.append(name)
            marker = MARKERS[structures.index(name) % len(MARKERS)]
            volumes, dices = zip(*points)
            ax.scatter(volumes, [100 * d for d in dices], s=10, color=colour, marker=marker, alpha=0.25)
            means.append((sum(volumes) / len(volumes), 100 * sum(dices) / len(dices), marker))
        means.sort()
        if means:
            ax.plot([m[0] for m in means], [m[1] for m in means], color=colour, label=model_label(key), lw=1.5)
            for volume, dice, marker in means:
                ax.scatter([volume], [dice], s=60, color=colour, marker=marker, edgecolors="black", zorder=3)
    for index, name in enumerate(structures):  # legend entries for the structure markers
        ax.scatter([], [], marker=MARKERS[index % len(MARKERS)], color="white", edgecolors="black", label=name)
    _log_x(ax, PLAIN_NUMBER)
    ax.set_xlabel("structure volume in the reference, ml (log scale)")
    ax.set_ylabel("Dice (%)")
    ax.set_ylim(-2, 102)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    ax.set_title("Dice per structure vs structure volume (small structures on the left)", fontsize=10)
    return _save(fig, path)


@_default_style
def plot_dice_vs_kd_weight(sweep: dict, path: Path) -> Path:
    """ReCo-KD students' mean Dice (bold) and Dice per class against lambda (log x); teacher and plain as lines.

    ``sweep`` is a KD-weight sweep's results (:mod:`recokd.evaluate.student_sweep`): models
    with a positive ``kd_weight`` are ReCo-KD students; the teacher (no weight) and the plain
    student (weight 0) are dashed horizontal lines at their mean Dice.
    """
    models = sweep["models"]
    students = sorted((m for m in models.values() if m.get("kd_weight")), key=lambda m: m["kd_weight"])
    classes = list(next(iter(models.values()))["dice_per_class"])
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    weights = [m["kd_weight"] for m in students]
    ax.plot(weights, [_percent(m.get("mean_dice")) for m in students], color=MODEL_COLOURS["student_recokd"],
            marker="o", lw=2, label=f"{model_label('student_recokd')}, mean")
    for index, name in enumerate(classes):
        ax.plot(weights, [_percent(m["dice_per_class"].get(name)) for m in students],
                color=CLASS_COLOURS[index % len(CLASS_COLOURS)],
                marker=MARKERS[index % len(MARKERS)], lw=0.8, alpha=0.7, label=name)
    for key in ("teacher", "student_plain"):
        if models.get(key, {}).get("mean_dice") is not None:
            ax.axhline(_percent(models[key]["mean_dice"]), color=_colour(key, 0), ls="--", lw=1.2,
                       label=f"{model_label(key)}, mean")
    _log_x(ax, PLAIN_NUMBER)
    ax.set_xlabel("KD weight λ (log scale)")
    ax.set_ylabel("Dice (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title("ReCo-KD students against the KD weight", fontsize=10)
    return _save(fig, path)


TRAINING_PANELS_PER_ROW = 4


@_default_style
def plot_start_study(sweep: dict, path: Path) -> Path:
    """Mean pseudo Dice per epoch of every student of an init study, epoch 0 being the probe before training.

    ``sweep`` is an init study's results (:mod:`recokd.evaluate.student_sweep`): every student
    has ``before_training`` and ``training``; the teacher's curve is left out.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    students = [(key, m) for key, m in sweep["models"].items() if m.get("before_training") and m.get("training")]
    for index, (key, model) in enumerate(students):
        curve = [model["before_training"]["pseudo_dice"], *model["training"]["pseudo_dice"]]
        ax.plot(range(len(curve)), [100 * d for d in curve], marker=MARKERS[index % len(MARKERS)], markersize=4,
                color=_colour(key, index) if key in MODEL_COLOURS else f"C{index}", lw=1.5, label=model_label(key))
    ax.set_xlabel("epoch (0: before the first step)")
    ax.set_ylabel("validation pseudo Dice (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("How each start learns (0: all background)", fontsize=10)
    return _save(fig, path)


@_default_style
def plot_width_sweep(sweep: dict, path: Path) -> Path:
    """Left: mean Dice of the ReCo-KD and plain students against parameters (log x), one line per mode.
    Right: CPU seconds on the CT-sized volume against parameters, where measured. The teacher is a
    star in both; the dotted line is the students' parameter budget, ``param_budget`` of the
    teacher's parameters.

    ``sweep`` is a width sweep's results (:mod:`recokd.evaluate.student_sweep`); each model
    has ``mode`` (``teacher``, ``recokd``, ``none``) and ``params``.
    """
    models, budget = sweep["models"], sweep.get("param_budget")
    teacher = next((m for m in models.values() if m.get("mode") == "teacher"), None)
    fig, (dice_ax, time_ax) = plt.subplots(1, 2, figsize=(10, 4.3))
    for mode, key in (("none", "student_plain"), ("recokd", "student_recokd")):
        students = sorted((m for m in models.values() if m.get("mode") == mode), key=lambda m: m["params"])
        dice_ax.plot([m["params"] for m in students], [_percent(m.get("mean_dice")) for m in students],
                     color=MODEL_COLOURS[key], marker="o", lw=1.8, label=model_label(key))
        timed = [m for m in students if m.get("ct_cpu_latency_s") is not None]
        if timed:
            time_ax.plot([m["params"] for m in timed], [m["ct_cpu_latency_s"] for m in timed],
                         color=MODEL_COLOURS[key], marker="o", lw=1.8, label=model_label(key))
    for ax, value in ((dice_ax, _percent(teacher.get("mean_dice")) if teacher else None),
                      (time_ax, teacher.get("ct_cpu_latency_s") if teacher else None)):
        if value is not None:
            ax.scatter([teacher["params"]], [value], marker="*", s=160, color=MODEL_COLOURS["teacher"],
                       label=model_label("teacher"), zorder=3)
        if teacher and budget:
            ax.axvline(budget * teacher["params"], color="black", ls=":", lw=1,
                       label=f"parameter budget ({budget:g} of the teacher)")
        _log_x(ax, EngFormatter())
        ax.set_xlabel("parameters (log scale)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    dice_ax.set_ylabel("mean Dice (%)")
    dice_ax.set_title("Accuracy against student size", fontsize=10)
    time_ax.set_yscale("log")
    _label_log_axis(time_ax.yaxis, PLAIN_NUMBER)
    time_ax.set_ylabel("CPU s on the CT-sized volume (log scale)")
    time_ax.set_title("Speed against student size", fontsize=10)
    return _save(fig, path)


@_default_style
def plot_training(results: dict, path: Path) -> Path | None:
    """One panel per model: nnU-Net's pseudo Dice per epoch, per class and mean (bold); ``None`` without records.

    A network in nnU-Net's all-background phase has pseudo Dice 0; the panels show when each
    model left it and when each structure, small ones included, first appeared.
    """
    trained = dict(trainings(results))
    if not trained:
        return None
    classes = list(next(iter(results["models"].values()))["dice_per_class"])
    columns = min(len(trained), TRAINING_PANELS_PER_ROW)
    rows = -(-len(trained) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns + 1, 3.3 * rows + 0.3), sharey=True,
                             squeeze=False)
    for ax in axes.flat[len(trained):]:
        ax.set_visible(False)
    for ax, (label, record) in zip(axes.flat, trained.items()):
        epochs = range(1, len(record["pseudo_dice"]) + 1)
        for index, name in enumerate(classes):
            ax.plot(epochs, [100 * epoch[index] for epoch in record["pseudo_dice_per_class"]], lw=0.9,
                    color=CLASS_COLOURS[index % len(CLASS_COLOURS)], label=name)
        ax.plot(epochs, [100 * d for d in record["pseudo_dice"]], color="black", lw=2, label="mean")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    for row in axes:
        row[0].set_ylabel("pseudo Dice (%)")
    axes.flat[len(trained) - 1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Validation pseudo Dice during training (0: all background)", fontsize=10)
    return _save(fig, path)


@_default_style
def plot_comparisons(results: dict, path: Path) -> Path | None:
    """Paired per-case Dice differences between models: mean and 95 % CI, a line at 0; ``None`` without any."""
    rows = [c for c in results.get("comparisons") or [] if c["metric"] == "dice" and c.get("mean") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(rows) + 1.6))
    for y, row in enumerate(reversed(rows)):
        mean, low, high = (100 * row[k] for k in ("mean", "ci_low", "ci_high"))
        colour = "tab:green" if low > 0 else ("tab:red" if high < 0 else "tab:gray")
        ax.errorbar([mean], [y], xerr=[[mean - low], [high - mean]], fmt="o", color=colour, capsize=4)
    ax.set_yticks(range(len(rows)), [f"{model_label(r['a'])} − {model_label(r['b'])}" for r in reversed(rows)],
                  fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    # Linear within +-1 point, logarithmic beyond: a 0.1-point difference and an 85-point one both readable.
    ax.set_xscale("symlog", linthresh=1.0)
    low, high = (100 * min(r["ci_low"] for r in rows), 100 * max(r["ci_high"] for r in rows))
    ax.set_xlim(min(-1.5, 2 * low), max(1.5, 2 * high))  # room for the outermost whiskers on either scale
    ax.xaxis.set_major_formatter(PLAIN_NUMBER)
    ax.set_xlabel("Dice difference, points (paired per case; 95 % bootstrap CI;\nlinear within ±1, logarithmic beyond)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title("Which differences are more than noise\n(green / red: the CI excludes 0)", fontsize=10)
    return _save(fig, path)


PLOTS = {
    "dice_vs_params": plot_dice_vs_params,
    "dice_vs_latency": plot_dice_vs_latency,
    "dice_per_class": plot_dice_per_class,
    "dice_vs_volume": plot_dice_vs_volume,
    "training": plot_training,
    "comparisons": plot_comparisons,
}


def write_plots(results: dict, out_dir: Path, name: str) -> dict[str, Path]:
    """Every plot of :data:`PLOTS` the results have data for, as ``out_dir/<name>_<plot>.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = {kind: plot(results, out_dir / f"{name}_{kind}.png") for kind, plot in PLOTS.items()}
    return {kind: path for kind, path in drawn.items() if path is not None}
