"""Sweeps beside a finished benchmark: more students, each with one setting changed, scored in one run.

The benchmark trains its students at one width and one KD weight. When ReCo-KD ends no better
than the plain student, two questions come first, and each has a sweep; a third asks how a
student should start:

* ``kd_weight``: is the distillation term simply too weak next to nnU-Net's segmentation
  loss? One more ReCo-KD student per extra lambda, at the benchmark's width.
* ``width``: do the gap to the teacher and KD's gain over no KD depend on the student's size?
  A ReCo-KD and a plain student per extra width (widths above the 1/10 parameter budget are
  kept as a reference), and the ReCo-KD student of every width timed on the benchmark's
  CT-sized volume beside the teacher in the same run, so that the accuracy bought by a wider
  student can be set against the speed it costs.
* ``init``: which start makes a narrow student learn from its first epoch? One plain student
  per variant of the teacher inheritance (:data:`INIT_VARIANTS`: channel importance, the
  least-squares refit, the learning rate), beside the benchmark's random-init and inherited
  plain students; every one also probed before its first step
  (:mod:`recokd.evaluate.start_probe`).

A sweep retrains nothing the benchmark has: it reuses the benchmark's teacher, preprocessed
data, split, schedule, seed and every other KD option. Each new student trains in a results
folder of its own under ``<work-dir>/<kind>_sweep/<key>/`` (side by side on a GPU, as the
benchmark's students); finished ones are reused and interrupted ones resumed. All of them are
scored together with the benchmark's teacher, plain and ReCo-KD students on the same held-out
cases with the same evaluation.

Results are JSON-ready: ``{benchmark, kind, title, created, device, schedule, width, seed,
options, versions, kd_weights | widths, param_budget, models: {key: {mode, width, kd_weight, params, flops,
mean_dice, dice_per_class, hd95_per_class, mean_hd95_mm, cpu_latency_s, cases, training
[, ct_cpu_latency_s, peak_rss_mb]}}}``; :func:`recokd.evaluate.sweep_report.write_sweep_report`
turns them into Markdown and plots.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from fractions import Fraction
from functools import partial
from pathlib import Path

import torch

from recokd.distill.options import KDOptions
from recokd.errors import RecokdError
from recokd.evaluate.benchmark_data import held_out_cases
from recokd.evaluate.comparison import evaluate_models, latency_and_memory_on_volume
from recokd.evaluate.concurrent_training import train_concurrently
from recokd.evaluate.environment import machine_description, package_versions
from recokd.evaluate.report import MAX_PARAM_RATIO, PLAIN, PLAIN_RANDOM, RECOKD, TEACHER
from recokd.evaluate.start_probe import probe_start
from recokd.evaluate.training_record import training_record
from recokd.nnunet.student_plans import parse_width, student_plans_identifier
from recokd.nnunet.training import Schedule
from recokd.workspace import Workspace

log = logging.getLogger(__name__)

SWEEP_NAMES = {"kd_weight": "KD weight sweep", "width": "width sweep", "init": "initialisation study"}
SWEEP_KINDS = tuple(SWEEP_NAMES)
BENCHMARK_MODELS = (TEACHER, PLAIN, RECOKD, PLAIN_RANDOM)  # the benchmark's packages a sweep reuses
REFERENCES = {"kd_weight": (PLAIN, RECOKD), "width": (PLAIN, RECOKD), "init": (PLAIN_RANDOM, PLAIN)}
SWEPT_MODES = {RECOKD: "recokd", PLAIN: "none"}
# Starts of a plain student besides the benchmark's own two (random init; activation spread + refit at lr 1e-2).
INIT_VARIANTS = {
    "gamma": {"init_importance": "gamma", "init_refit": "none"},
    "activation": {"init_importance": "activation", "init_refit": "none"},
    "gamma-refit": {"init_importance": "gamma", "init_refit": "least_squares"},
    "activation-refit-lr0.001": {"init_importance": "activation", "init_refit": "least_squares",
                                 "learning_rate": 0.001},
}
START_OPTIONS = ("init", "init_importance", "init_refit", "learning_rate")


@dataclass(frozen=True)
class SweepStudent:
    """One student a sweep adds: its model key, distillation options (mode included) and width."""

    key: str
    options: KDOptions
    width: Fraction

    @property
    def kd_weight(self) -> float:
        """The lambda it trains with: 0 for a plain student."""
        return self.options.kd_weight if self.options.mode != "none" else 0.0


@dataclass(frozen=True)
class FinishedBenchmark:
    """What a sweep takes from a finished benchmark's work directory."""

    work_dir: Path
    dataset: str
    preset: dict
    kd_options: KDOptions
    width: Fraction
    seed: int
    workspace: Workspace
    teacher_folder: Path
    packages: dict[str, Path]  # BENCHMARK_MODELS -> model package

    @classmethod
    def read(cls, work_dir: Path) -> FinishedBenchmark:
        """The benchmark in ``work_dir``; a clear error when it is none or is unfinished."""
        from recokd.evaluate.protocol import CONFIGURATION, DATASETS, package_name

        work_dir = Path(work_dir).resolve()
        path = work_dir / "benchmark_config.json"
        if not path.is_file():
            raise RecokdError(f"{work_dir} is not a benchmark work directory ({path.name} missing): give the "
                              "--work-dir of a finished recokd benchmark run.")
        settings = json.loads(path.read_text())
        workspace = Workspace.under(work_dir, respect_environment=False)
        teacher_folder = (workspace.results / DATASETS[settings["dataset"]].folder
                          / f"nnUNetTrainer__nnUNetPlans__{CONFIGURATION}")
        seed = int(settings["seed"])
        packages = {key: work_dir / "packages" / f"{package_name(key, None if key == TEACHER else seed)}.recokd.zip"
                    for key in BENCHMARK_MODELS}
        missing = [str(p) for p in [*packages.values(), teacher_folder / "plans.json"] if not p.is_file()]
        if missing:
            raise RecokdError(f"{work_dir} holds no finished benchmark (missing: {', '.join(missing)}); "
                              "run recokd benchmark with this --work-dir first.")
        return cls(work_dir, settings["dataset"], settings["preset"], KDOptions.from_dict(settings["kd_options"]),
                   Fraction(settings["width"]), seed, workspace, teacher_folder, packages)

    @property
    def spec(self):
        from recokd.evaluate.protocol import DATASETS

        return DATASETS[self.dataset]

    def student_plans(self, width: Fraction) -> str:
        """The plans identifier of a student of ``width`` of this benchmark's teacher."""
        teacher_plans = json.loads((self.teacher_folder / "plans.json").read_text())["plans_name"]
        return student_plans_identifier(teacher_plans, width)

    def student_folder(self, student: SweepStudent, results: Path) -> Path:
        """Where nnU-Net puts ``student`` trained into the results folder ``results``."""
        from recokd.evaluate.protocol import CONFIGURATION, STUDENT_TRAINERS

        trainer = STUDENT_TRAINERS[student.options.mode]
        return results / self.spec.folder / f"{trainer}__{self.student_plans(student.width)}__{CONFIGURATION}"

    def sweep_workspace(self, kind: str, key: str) -> Workspace:
        """The benchmark's workspace with a results folder of its own for the sweep student ``key``."""
        return Workspace(self.workspace.root, self.workspace.raw, self.workspace.preprocessed,
                         self.work_dir / f"{kind}_sweep" / key / "nnUNet_results")

    def reference_students(self, kind: str) -> list[SweepStudent]:
        """The benchmark's own students a ``kind`` sweep is set against (its first seed), described as sweep students."""
        from recokd.evaluate.protocol import ARMS

        return [SweepStudent(key, replace(self.kd_options, mode=ARMS[key].mode, init=ARMS[key].init), self.width)
                for key in REFERENCES[kind]]

    def reference_folder(self, student: SweepStudent) -> Path:
        """Where the benchmark trained its own student ``student`` (first seed)."""
        from recokd.evaluate.protocol import student_workspace

        return self.student_folder(student, student_workspace(self.workspace, student.key, self.seed).results)


def sweep_students(kind: str, values: Sequence, benchmark: FinishedBenchmark) -> list[SweepStudent]:
    """The students a sweep of ``kind`` over ``values`` adds, without those the benchmark already has.

    ``kd_weight``: a ReCo-KD student ``student_recokd_kd<lambda>`` per new lambda. ``width``: a
    ReCo-KD and a plain student ``student_{recokd,plain}_w<denominator>`` per new width. ``init``:
    a plain student ``student_plain_init-<variant>`` per :data:`INIT_VARIANTS` name (all when empty).
    """
    base = benchmark.kd_options
    if kind == "kd_weight":
        weights = sorted({float(v) for v in values} - {base.kd_weight})
        return [SweepStudent(f"{RECOKD}_kd{w:g}", replace(base, mode="recokd", kd_weight=w), benchmark.width)
                for w in weights]
    if kind == "width":
        widths = sorted({parse_width(v) for v in values} - {benchmark.width}, reverse=True)
        return [SweepStudent(f"{key}_w{w.denominator}", replace(base, mode=mode), w)
                for w in widths for key, mode in SWEPT_MODES.items()]
    if kind == "init":
        unknown = sorted(set(values) - set(INIT_VARIANTS))
        if unknown:
            raise RecokdError(f"Unknown start(s) {', '.join(unknown)}; the init study knows {', '.join(INIT_VARIANTS)}.")
        return [SweepStudent(f"{PLAIN}_init-{name}", replace(base, mode="none", init="teacher", **INIT_VARIANTS[name]),
                             benchmark.width) for name in INIT_VARIANTS if name in (values or INIT_VARIANTS)]
    raise RecokdError(f"Unknown sweep '{kind}'; choose from {', '.join(SWEEP_KINDS)}.")


def run_sweep(work_dir: Path, kind: str, values: Sequence, device: str = "auto", threads: int | None = None,
              mirroring: bool = True) -> dict:
    """Train the students of a ``kind`` sweep over ``values`` beside the benchmark in ``work_dir``; score all."""
    from recokd.device import resolve_device

    benchmark = FinishedBenchmark.read(work_dir)
    new_students = sweep_students(kind, values, benchmark)
    if not new_students:
        own = benchmark.kd_options.kd_weight if kind == "kd_weight" else benchmark.width
        raise RecokdError(f"Nothing new to train: the benchmark already has {kind.replace('_', ' ')} {own}.")
    references = benchmark.reference_students(kind)
    device = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(threads)  # training and evaluation alike, as in the benchmark
    packages, folders = _train_and_export(benchmark, kind, new_students, device)
    benchmark.workspace.activate()

    students = {s.key: s for s in [*references, *new_students]}
    folders |= {TEACHER: benchmark.teacher_folder} | {s.key: benchmark.reference_folder(s) for s in references}
    order = [TEACHER, *sorted(students, key=lambda k: (-students[k].width, students[k].kd_weight))]
    cases = held_out_cases(benchmark.workspace.raw / benchmark.spec.folder)[: benchmark.preset["max_test_cases"]]
    log.info("== evaluating %d models on %d test cases (CPU)", len(order), len(cases))
    models = evaluate_models({key: packages[key] for key in order}, cases, "cpu", threads, mirroring)
    models[TEACHER].update(mode="teacher", width="1", kd_weight=None)
    for key, student in students.items():
        models[key].update(mode=student.options.mode, width=str(student.width), kd_weight=student.kd_weight,
                           start={name: getattr(student.options, name) for name in START_OPTIONS})
    for key, entry in models.items():
        entry["training"] = training_record(folders[key])
    if kind == "init":  # how good each start is before its first step
        for key, student in students.items():
            log.info("== probing %s before training", key)
            models[key]["before_training"] = probe_start(
                benchmark.workspace, benchmark.teacher_folder, benchmark.spec.folder, student.width, student.options,
                benchmark.seed, device)
    ct_volume = {}
    if kind == "width":  # the plain student of a width has its ReCo-KD student's architecture: one stands for both
        ct_volume = _on_ct_volume(benchmark, {key: packages[key] for key in order
                                              if key == TEACHER or students[key].options.mode == "recokd"}, threads)
    for key, measured in ct_volume.items():
        models[key].update(measured)

    return {
        "benchmark": f"{benchmark.dataset}_{kind}_sweep",
        "kind": kind,
        "title": f"{benchmark.spec.title}: {SWEEP_NAMES[kind]}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": machine_description(device),
        "schedule": {"preset": benchmark.preset["name"], **benchmark.preset["training"]},
        "width": str(benchmark.width),
        "seed": benchmark.seed,
        "options": {"kd": benchmark.kd_options.to_dict(),
                    "evaluation": {"device": "cpu", "mirroring": mirroring, "threads": threads,
                                   "test_cases": len(cases)},
                    **({"ct_volume": {"shape_zyx": benchmark.preset["ct_shape"], "mirroring": False,
                                      "tile_step": benchmark.preset["ct_tile_step"], "threads": threads,
                                      "models": list(ct_volume)}} if ct_volume else {})},
        "versions": package_versions(),
        f"{kind}s": _swept_values(kind, list(students.values())),
        "param_budget": MAX_PARAM_RATIO,
        "models": models,
    }


def _train_and_export(benchmark: FinishedBenchmark, kind: str, students: list[SweepStudent],
                      device: torch.device) -> tuple[dict[str, Path], dict[str, Path]]:
    """Train (or reuse, or resume) each new student and export it; ``(packages, result folders)`` by key.

    The returned packages include the benchmark's own.
    """
    from recokd.evaluate.protocol import export_model, train_student

    schedule = Schedule(**benchmark.preset["training"])
    workspaces = {s.key: benchmark.sweep_workspace(kind, s.key) for s in students}
    jobs = {s.key: partial(train_student, s.key, s.options.mode, workspaces[s.key], benchmark.teacher_folder,
                           benchmark.spec.folder, benchmark.student_plans(s.width), s.width, s.options, schedule,
                           device, benchmark.seed)
            for s in students}
    if device.type == "cuda":  # side by side, as the benchmark's students (a GPU idles behind augmentation)
        log.info("== training %s concurrently", ", ".join(jobs))
        folders = train_concurrently(jobs)
    else:
        folders = {}
        for key, job in jobs.items():
            log.info("== training %s", key)
            folders[key] = job()
    packages = benchmark.packages | {key: export_model(folders[key], workspaces[key], f"{key}_seed{benchmark.seed}")
                                     for key in jobs}
    return packages, folders


def _swept_values(kind: str, students: list[SweepStudent]) -> list:
    """The lambdas (ascending) or the widths (widest first, as text) the sweep's ReCo-KD students cover; the starts."""
    if kind == "init":
        return [s.key for s in students]
    recokd = [s for s in students if s.options.mode == "recokd"]
    if kind == "kd_weight":
        return sorted({s.kd_weight for s in recokd})
    return [str(w) for w in sorted({s.width for s in recokd}, reverse=True)]


def _on_ct_volume(benchmark: FinishedBenchmark, packages: dict[str, Path], threads: int | None) -> dict[str, dict]:
    """CPU latency and peak RSS of each package on the benchmark's CT-sized volume, in one run."""
    shape = "x".join(map(str, benchmark.preset["ct_shape"]))
    log.info("== CPU latency and peak memory on a %s volume", shape)
    return latency_and_memory_on_volume(packages, benchmark.preset["ct_shape"], threads, False,
                                        benchmark.preset["ct_tile_step"], benchmark.seed,
                                        benchmark.work_dir / f"ct_phantom_{shape}.nrrd")
