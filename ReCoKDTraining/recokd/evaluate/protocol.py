"""The benchmark protocol: teacher vs ReCo-KD student vs plain and logit-KD students, one run, one machine.

1. Data: a fixed, seeded train/test split written as the benchmark's own nnU-Net raw dataset
   (:mod:`recokd.evaluate.benchmark_data`); test cases never reach training or validation.
2. nnU-Net plans and preprocesses it; the student width is checked against the parameter
   budget (at most 1/10 of the teacher's) before anything trains, narrower if needed.
3. The teacher (nnU-Net's default ``3d_fullres``) trains once. Four student arms at that
   width (:data:`ARMS`) train with the same plans and schedule, each with ``seeds`` training
   seeds: no KD from nnU-Net's random initialisation (what stock nnU-Net gives at that
   width), and no KD, logit KD and ReCo-KD starting from the teacher
   (:mod:`recokd.nnunet.inheritance`). Each training has a results folder of its own
   (``<work-dir>/students/<arm>/seed_<s>``) and is exported as a model package; its per-epoch
   log is read back from its checkpoint (:mod:`recokd.evaluate.training_record`).
4. Every package is evaluated on the test split (:func:`~recokd.evaluate.comparison.evaluate_models`);
   an arm's entry is the mean over its seeds with every seed kept under ``runs``, and the arms
   are compared case by case (:mod:`recokd.evaluate.statistics`). The teacher and one
   ReCo-KD student are timed on a CT-sized volume (latency, peak RSS), and the KD step is
   timed against the plain step.

Finished trainings in the work directory are reused and interrupted ones resumed, so a long
run can be restarted (or given more seeds); the work directory remembers its settings and
refuses others.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from fractions import Fraction
from functools import partial
from pathlib import Path

import torch

from recokd.device import resolve_device
from recokd.distill.options import KDOptions
from recokd.errors import RecokdError
from recokd.evaluate.benchmark_data import (
    Split,
    case_ids,
    held_out_cases,
    seeded_split,
    write_phantom_split,
    write_split_dataset,
)
from recokd.evaluate.comparison import evaluate_models, latency_and_memory_on_volume
from recokd.evaluate.complexity import plans_complexity
from recokd.evaluate.concurrent_training import train_concurrently
from recokd.evaluate.environment import machine_description, package_versions
from recokd.evaluate.report import LOGIT, MAX_PARAM_RATIO, PLAIN, PLAIN_RANDOM, RECOKD, TEACHER
from recokd.evaluate.statistics import compare_models, seed_aggregate
from recokd.evaluate.step_timing import measure_kd_step_ratio
from recokd.evaluate.training_record import training_record
from recokd.nnunet.prepare import prepare_dataset
from recokd.nnunet.student_plans import ALLOWED_WIDTHS, derive_student_plans, student_plans_identifier
from recokd.nnunet.training import Schedule, run_distillation, seed_everything, train_teacher
from recokd.workspace import Workspace

log = logging.getLogger(__name__)

CONFIGURATION = "3d_fullres"
FOLD = 0
STUDENT_TRAINERS = {"recokd": "ReCoKDTrainer", "logit": "ReCoKDTrainer_logitKD", "none": "ReCoKDTrainer_noKD"}
# The students share one architecture, so one of them stands for all on the CT-sized volume.
CT_VOLUME_MODELS = (TEACHER, RECOKD)


@dataclass(frozen=True)
class StudentArm:
    """One kind of student in the comparison: its distillation mode and how it starts."""

    mode: str
    init: str


ARMS = {
    RECOKD: StudentArm("recokd", "teacher"),
    LOGIT: StudentArm("logit", "teacher"),
    PLAIN: StudentArm("none", "teacher"),
    PLAIN_RANDOM: StudentArm("none", "random"),
}
# (a, b): "a - b" per test case, over seeds; a first so that a positive difference favours a.
COMPARISONS = ((RECOKD, PLAIN), (RECOKD, PLAIN_RANDOM), (RECOKD, LOGIT), (LOGIT, PLAIN), (PLAIN, PLAIN_RANDOM),
               (TEACHER, RECOKD))


@dataclass(frozen=True)
class DatasetSpec:
    """A benchmark dataset: its nnU-Net folder name in the work directory and what to cite."""

    folder: str
    title: str
    source: str
    licence: str
    citation: str


DATASETS = {
    "hippocampus": DatasetSpec(
        "Dataset904_HippocampusSplit", "ReCo-KD benchmark: MSD Hippocampus (MRI)",
        "Medical Segmentation Decathlon, Task04_Hippocampus (Vanderbilt University Medical Center)",
        "CC-BY-SA 4.0",
        "Simpson et al., A large annotated medical image dataset for the development and evaluation of "
        "segmentation algorithms, arXiv:1902.09063 (2019)"),
    "phantom": DatasetSpec(
        "Dataset905_PhantomBenchmark", "ReCo-KD benchmark: synthetic CT phantom (small structures)",
        "recokd.data.phantom (synthetic, generated)", "CC0-1.0", "ReCoKD synthetic CT phantom"),
}


@dataclass(frozen=True)
class Preset:
    """A named benchmark size: how long every model trains and how much is measured."""

    name: str
    description: str
    training: Schedule
    max_test_cases: int | None
    ct_shape: tuple[int, int, int]
    ct_tile_step: float  # sliding-window step on the CT-sized volume (nnU-Net's default is 0.5)
    timing_steps: int
    phantom_cases: tuple[int, int]  # (training, test) cases of the phantom variant
    phantom_shape: tuple[int, int, int]


PRESETS = {
    "smoke": Preset(
        "smoke", "pipeline check in minutes: a few iterations per model, a reduced volume; numbers are meaningless",
        Schedule(epochs=1, iterations_per_epoch=2, val_iterations_per_epoch=1), max_test_cases=4,
        ct_shape=(48, 128, 128), ct_tile_step=1.0, timing_steps=3, phantom_cases=(6, 2), phantom_shape=(48, 48, 48)),
    "cpu": Preset(
        "cpu", "on a 2-core CPU about an hour for the teacher and an hour per seed of the four students: every model "
        "20 epochs x 20 iterations (400 steps)",
        Schedule(epochs=20, iterations_per_epoch=20, val_iterations_per_epoch=3), max_test_cases=None,
        ct_shape=(120, 512, 512), ct_tile_step=1.0, timing_steps=10, phantom_cases=(24, 8), phantom_shape=(64, 64, 64)),
    "cpu_long": Preset(
        "cpu_long", "a 2-core CPU, long enough for x1/4 students to leave nnU-Net's all-background phase: every "
        "model 50 epochs x 20 iterations (1,000 steps); the phantom at 48^3",
        Schedule(epochs=50, iterations_per_epoch=20, val_iterations_per_epoch=3), max_test_cases=None,
        ct_shape=(120, 512, 512), ct_tile_step=1.0, timing_steps=10, phantom_cases=(24, 8), phantom_shape=(48, 48, 48)),
    "gpu": Preset(
        "gpu", "one GPU in well under half an hour: every model 40 epochs x 100 iterations (4,000 steps, 10x the "
        "cpu schedule), the three students side by side",
        Schedule(epochs=40, iterations_per_epoch=100, val_iterations_per_epoch=10), max_test_cases=None,
        ct_shape=(120, 512, 512), ct_tile_step=1.0, timing_steps=50, phantom_cases=(60, 20), phantom_shape=(96, 96, 96)),
}


@dataclass(frozen=True)
class BenchmarkConfig:
    """Everything a benchmark run depends on; recorded in the work directory and in the results."""

    dataset: str
    preset: Preset
    work_dir: Path
    source: Path | None = None
    width: Fraction = Fraction(1, 4)
    seed: int = 0
    test_fraction: float = 0.2
    device: str = "auto"
    kd_options: KDOptions = field(default_factory=KDOptions)
    mirroring: bool = True
    threads: int | None = None
    concurrent_students: bool | None = None  # a seed's students side by side; None: on a GPU only
    seeds: int = 1  # training seeds per student arm: seed, seed + 1, ...

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise RecokdError(f"A benchmark needs at least one seed per student arm, got {self.seeds}.")

    @property
    def training_seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds)]

    def fingerprint(self) -> dict:
        """What must not change between a run and its restart in the same work directory (more seeds may come)."""
        return {"dataset": self.dataset, "preset": asdict(self.preset), "source": str(self.source),
                "width": str(self.width), "seed": self.seed, "test_fraction": self.test_fraction,
                "kd_options": self.kd_options.to_dict()}

    def arm_options(self, key: str) -> KDOptions:
        """The distillation options of student arm ``key``: the benchmark's, with the arm's mode and start."""
        return replace(self.kd_options, mode=ARMS[key].mode, init=ARMS[key].init)


def run_benchmark(config: BenchmarkConfig, on_stage: Callable[[str], None] | None = None) -> dict:
    """Run the whole protocol and return the results (the schema of :mod:`recokd.evaluate.report`)."""
    stage = on_stage or (lambda message: log.info("== %s", message))
    if config.dataset not in DATASETS:
        raise RecokdError(f"Unknown benchmark dataset '{config.dataset}'; choose from {', '.join(DATASETS)}.")
    device = resolve_device(config.device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)  # training, evaluation and step timing alike
    spec, preset = DATASETS[config.dataset], config.preset
    workspace = Workspace.under(config.work_dir, respect_environment=False).activate()
    _claim_work_dir(workspace.root, config.fingerprint())

    stage("data: fixed train/test split")
    raw = workspace.raw / spec.folder
    split = _write_data(config, raw)
    cases = held_out_cases(raw)[: preset.max_test_cases]

    stage("nnU-Net planning and preprocessing")
    preprocessed = prepare_dataset(workspace, spec.folder, CONFIGURATION)
    teacher_plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    width, width_note = choose_width(teacher_plans, dataset_json, CONFIGURATION, config.width)
    stage(width_note)

    teacher_folder, student_folders = _train_models(config, workspace, spec.folder, teacher_plans, width, device,
                                                    stage)
    runs = {TEACHER: {config.seed: teacher_folder}} | student_folders
    packages = {(key, seed): export_model(folder, workspace, package_name(key, None if key == TEACHER else seed))
                for key, by_seed in runs.items() for seed, folder in by_seed.items()}
    measured = _measure_models(config, workspace, packages, cases, device, stage)
    models = {}
    for key, by_seed in runs.items():
        for seed, folder in by_seed.items():
            measured[key, seed]["training"] = training_record(folder, FOLD)
            if key != TEACHER:
                measured[key, seed].update(seed=seed, init=ARMS[key].init, mode=ARMS[key].mode)
        models[key] = measured[key, config.seed] if key == TEACHER else \
            seed_aggregate([measured[key, seed] for seed in by_seed])
    stage("paired per-case comparisons of the arms")
    comparisons = compare_models(models, [pair for pair in COMPARISONS if set(pair) <= set(models)])
    stage("timing the KD training step against the plain step")
    timing = measure_kd_step_ratio(workspace, teacher_folder, spec.folder, width,
                                   replace(config.kd_options, mode="recokd"), device, steps=preset.timing_steps)
    return {
        "benchmark": config.dataset,
        "title": spec.title,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"name": spec.folder, "source": spec.source, "licence": spec.licence, "citation": spec.citation,
                    "labels": dataset_json["labels"]},
        "device": machine_description(device),
        "schedule": {"preset": preset.name, "description": preset.description, **asdict(preset.training)},
        "split": split.to_dict(),
        "seeds": {"split": config.seed, "teacher": config.seed, "students": config.training_seeds,
                  "ct_volume": config.seed},
        "versions": package_versions(),
        "options": {
            "kd": config.kd_options.to_dict(),
            "arms": {key: {"mode": arm.mode, "init": arm.init} for key, arm in ARMS.items()},
            "width": str(width),
            "width_choice": width_note,
            "configuration": CONFIGURATION,
            "fold": FOLD,
            "evaluation": {"device": "cpu", "mirroring": config.mirroring, "threads": config.threads,
                           "test_cases": len(cases), "warm_up_predictions": 1},
            "ct_volume": {"shape_zyx": list(preset.ct_shape), "spacing": "each model's own target spacing",
                          "mirroring": False, "tile_step": preset.ct_tile_step, "threads": config.threads,
                          "source": "recokd.data.phantom", "models": list(CT_VOLUME_MODELS)},
        },
        "notes": [width_note] + ([] if timing.device.startswith("cuda") else [
            f"The KD step ratio was measured on {timing.device}, not on a GPU: the GPU target is not judged."]),
        "models": models,
        "comparisons": comparisons,
        "kd_step_ratio": timing.ratio,
        "kd_step_timing": timing.to_dict(),
    }


def _train_models(config: BenchmarkConfig, workspace: Workspace, dataset: str, teacher_plans: dict, width: Fraction,
                  device: torch.device, stage: Callable[[str], None]) -> tuple[Path, dict[str, dict[int, Path]]]:
    """Train (or reuse) the teacher and every student arm at every seed; ``(teacher folder, {arm: {seed: folder}})``."""
    schedule = config.preset.training
    stage("training the teacher")
    teacher_folder = _train_once(
        workspace, dataset, "nnUNetTrainer", teacher_plans["plans_name"], config.seed,
        lambda resume: train_teacher(workspace, dataset, CONFIGURATION, FOLD, schedule, device, resume,
                                     on_epoch=_epoch_logger(TEACHER)))
    student_plans = student_plans_identifier(teacher_plans["plans_name"], width)
    side_by_side = device.type == "cuda" if config.concurrent_students is None else config.concurrent_students
    folders: dict[str, dict[int, Path]] = {key: {} for key in ARMS}
    for seed in config.training_seeds:
        jobs = {key: partial(train_student, f"{key} (seed {seed})", ARMS[key].mode, student_workspace(workspace, key, seed),
                             teacher_folder, dataset, student_plans, width, config.arm_options(key), schedule, device,
                             seed)
                for key in ARMS}
        if side_by_side:  # a GPU idles behind nnU-Net's augmentation: the trainings share it well
            stage(f"distilling {', '.join(jobs)} concurrently (width {width}, seed {seed})")
            trained = train_concurrently(jobs)
        else:
            trained = {}
            for key, job in jobs.items():
                stage(f"distilling {key} (mode {ARMS[key].mode}, init {ARMS[key].init}, width {width}, seed {seed})")
                trained[key] = job()
        for key, folder in trained.items():
            folders[key][seed] = folder
    workspace.activate()  # a student's training exported its own results folder
    return teacher_folder, folders


def student_workspace(workspace: Workspace, key: str, seed: int) -> Workspace:
    """The benchmark's workspace with a results folder of its own for student arm ``key`` at ``seed``."""
    return Workspace(workspace.root, workspace.raw, workspace.preprocessed,
                     workspace.root / "students" / key / f"seed_{seed}" / "nnUNet_results")


def package_name(key: str, seed: int | None) -> str:
    """The package file stem of a model of the benchmark (the teacher has no seed)."""
    return key if seed is None else f"{key}_seed{seed}"


def train_student(key: str, mode: str, workspace: Workspace, teacher_folder: Path, dataset: str, plans: str,
                  width: Fraction, options: KDOptions, schedule: Schedule, device: torch.device, seed: int) -> Path:
    """One student of the benchmark (module level, so that it can run in its own process).

    ``workspace`` is activated first: where a finished or interrupted training is looked for
    follows it, also in a process of its own.
    """
    workspace.activate()
    return _train_once(workspace, dataset, STUDENT_TRAINERS[mode], plans, seed, lambda resume: run_distillation(
        workspace, teacher_folder, dataset, width, options, FOLD, schedule, device, resume,
        on_epoch=_epoch_logger(key)))


def _measure_models(config: BenchmarkConfig, workspace: Workspace, packages: dict[tuple[str, int], Path],
                    cases: list[tuple[Path, Path]], device: torch.device,
                    stage: Callable[[str], None]) -> dict[tuple[str, int], dict]:
    """Scores and CPU latency on the test cases, GPU latency when training ran there, the CT-sized volume.

    ``packages`` and the result are keyed by ``(model key, seed)``.
    """
    preset = config.preset
    named = {f"{key}@{seed}": path for (key, seed), path in packages.items()}
    stage(f"evaluating {len(named)} models on {len(cases)} test cases (CPU)")
    evaluated = evaluate_models(named, cases, "cpu", config.threads, config.mirroring, _case_logger)
    if device.type == "cuda":
        stage("timing the test cases on the GPU")
        for name, entry in evaluate_models(named, cases, device, None, config.mirroring, _case_logger).items():
            evaluated[name]["gpu_latency_s"] = entry["gpu_latency_s"]
    models = {(name.split("@")[0], int(name.split("@")[1])): entry for name, entry in evaluated.items()}

    shape = "x".join(map(str, preset.ct_shape))
    stage(f"CPU latency and peak memory on a {shape} volume")
    on_volume = {key: packages[key, config.seed] for key in CT_VOLUME_MODELS}
    timed = latency_and_memory_on_volume(on_volume, preset.ct_shape, config.threads, False, preset.ct_tile_step,
                                         config.seed, workspace.root / f"ct_phantom_{shape}.nrrd")
    for (key, seed), entry in models.items():
        entry.update(timed.get(key, {}) if seed == config.seed else {})
        entry.setdefault("ct_cpu_latency_s", None)
        entry.setdefault("peak_rss_mb", None)
    return models


def choose_width(teacher_plans: dict, dataset_json: dict, configuration: str, preferred: Fraction,
                 max_ratio: float = MAX_PARAM_RATIO) -> tuple[Fraction, str]:
    """``preferred`` if the student has at most ``max_ratio`` of the teacher's parameters, else the widest that does.

    Returns the width and a sentence saying what was measured and why that width.
    """
    teacher = plans_complexity(teacher_plans, dataset_json, configuration).parameters
    narrower = sorted((w for w in ALLOWED_WIDTHS if w <= preferred), reverse=True)
    ratio = None
    for width in narrower:
        student_plans = derive_student_plans(teacher_plans, configuration, width)
        ratio = plans_complexity(student_plans, dataset_json, configuration).parameters / teacher
        if ratio <= max_ratio:
            reason = "" if width == preferred else (f"; width {preferred} was above the 1/{round(1 / max_ratio)} "
                                                    "parameter budget, so the next narrower width is used")
            return width, (f"Student width {width}: {ratio:.3f} of the teacher's {teacher:,} parameters"
                           f"{reason}.")
    raise RecokdError(f"No student width up to {preferred} stays within {max_ratio} of the teacher's parameters "
                      f"(narrowest: {ratio:.3f}); the channel floor of 8 keeps the student too large.")


def _write_data(config: BenchmarkConfig, raw: Path) -> Split:
    if config.dataset == "phantom":
        num_train, num_test = config.preset.phantom_cases
        return write_phantom_split(raw, num_train, num_test, config.preset.phantom_shape, config.seed)
    if config.source is None or not (Path(config.source) / "dataset.json").is_file():
        raise RecokdError(f"Hippocampus data not found at {config.source}: give --source, the nnU-Net raw folder "
                          "Dataset004_Hippocampus (see ../shared/data/README.md).")
    split = seeded_split(case_ids(Path(config.source)), config.test_fraction, config.seed)
    write_split_dataset(Path(config.source), raw, split,
                        f"ReCoKD benchmark split (seed {config.seed}): training part only in imagesTr")
    return split


def _claim_work_dir(root: Path, fingerprint: dict) -> None:
    """Record the settings in the work directory; refuse a directory holding a run with other settings."""
    path = root / "benchmark_config.json"
    fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back: tuples become lists
    if path.is_file():
        recorded = json.loads(path.read_text())
        if isinstance(recorded.get("kd_options"), dict):  # options added since the run began: their defaults
            recorded["kd_options"] = KDOptions.from_dict(recorded["kd_options"]).to_dict()
        if recorded != fingerprint:
            changed = sorted(k for k in fingerprint if recorded.get(k) != fingerprint[k])
            raise RecokdError(f"{root} holds a benchmark run with other settings ({', '.join(changed)} differ); "
                              "use another --work-dir, or the same settings to continue that run.")
    else:
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(fingerprint, indent=2))


def _train_once(workspace: Workspace, dataset: str, trainer: str, plans: str, seed: int,
                train: Callable[[bool], Path]) -> Path:
    """Reuse a finished training, resume an interrupted one, or train from scratch with every RNG seeded."""
    folder = workspace.results / dataset / f"{trainer}__{plans}__{CONFIGURATION}"
    fold = folder / f"fold_{FOLD}"
    if (fold / "checkpoint_final.pth").is_file():
        log.info("Reusing the finished training in %s", folder)
        return folder
    resume = (fold / "checkpoint_latest.pth").is_file()
    seed_everything(seed)
    return train(resume)


def export_model(result_folder: Path, workspace: Workspace, name: str) -> Path:
    from recokd.package.export import export_package

    return export_package(result_folder, workspace.root / "packages" / f"{name}.recokd.zip", fold=FOLD,
                          name=f"benchmark-{name}", overwrite=True)


def _epoch_logger(key: str):
    def on_epoch(done: int, total: int, values: dict) -> None:
        dice = values.get("mean_fg_dice")
        log.info("%s: epoch %d/%d%s", key, done, total, "" if dice is None else f", pseudo Dice {dice:.3f}")

    return on_epoch


def _case_logger(key: str, done: int, total: int) -> None:
    if done == total or done % 10 == 0:
        log.info("%s: %d/%d test cases", key, done, total)
