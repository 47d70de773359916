"""``recokd demo``: the whole product on the synthetic phantom, on a laptop CPU, in minutes.

generate phantom -> nnU-Net plan + preprocess -> the teacher -> three students at a quarter of
its width: ReCo-KD and no KD, both started from the pruned teacher
(:mod:`recokd.nnunet.inheritance`), and no KD from nnU-Net's random initialisation (what stock
nnU-Net gives at that width) -> export the packages -> segment the held-out cases with each
-> Dice per class, CPU time, a report with plots.

The teacher is the one ReCoKD ships (``Resources/Models/phantom-teacher.recokd.zip``), as a
user who already has a teacher would start: the demo's minutes go to distillation and
inference. ``--retrain-teacher`` trains it instead, from the same seeded data with nnU-Net's own
trainer, and writes its package (this is how the shipped one was made:
``scripts/train_phantom_teacher.sh``). Every training is seeded and nnU-Net's augmentation runs
in the main process, so two runs on one machine give the same numbers. Every step reuses
what a previous run left in the work folder, so a second run (or a run after an interruption)
only does what is missing.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from recokd.data.phantom import PhantomConfig, write_dataset
from recokd.distill.options import KDOptions
from recokd.errors import RecokdError
from recokd.nnunet.augmentation import augmentation_workers
from recokd.nnunet.prepare import prepare_dataset
from recokd.nnunet.student_plans import student_plans_identifier
from recokd.nnunet.training import Schedule, run_distillation, seed_everything, train_teacher
from recokd.workspace import Workspace

DATASET = "Dataset990_ReCoKDPhantom"
TEACHER_NAME = "phantom-teacher"  # the bundled package's model name
CONFIGURATION = "3d_fullres"
# key -> (mode, how it starts); the students of the demo, all at DemoConfig.width of the teacher
STUDENTS = {"student_recokd": ("recokd", "teacher"), "student_plain": ("none", "teacher"),
            "student_plain_random": ("none", "random")}
# What the teacher's preprocessing must share with the demo's data for the teacher to fit it.
PREPROCESSING_KEYS = ("data_identifier", "patch_size", "spacing", "normalization_schemes", "use_mask_for_norm")


@dataclass(frozen=True)
class DemoConfig:
    """The demo's sizes, chosen so that a 2-core CPU finishes within 15 minutes.

    The phantom is 40^3 with its two tiny structures widened by 2 (at 40^3 the vessel's
    default radius is under one voxel: not a structure any network at that resolution can
    find). They stay tiny, 0.15-0.3 % of the volume each (the adrenal gland 95-170 voxels).
    At a widening of 1.5 (40-70 adrenal voxels) the teacher's adrenal pseudo Dice stayed at 0
    for 136 of 150 epochs and ended at 10 % test Dice. The teacher is nnU-Net's plans at half
    width (its package stays under 6 MB), trained 250 epochs of 20 iterations (about 35
    minutes on 2 cores; the demo ships it). The students are a quarter of the teacher's width,
    started from it.
    """

    train_cases: int = 16
    test_cases: int = 4
    size: int = 40
    small_structure_scale: float = 2.0
    seed: int = 0
    teacher_width: Fraction = Fraction(1, 2)
    width: Fraction = Fraction(1, 4)
    teacher_schedule: Schedule = field(default_factory=lambda: Schedule(250, 20, 3))
    student_schedule: Schedule = field(default_factory=lambda: Schedule(12, 20, 2))

    @property
    def phantom(self) -> PhantomConfig:
        return PhantomConfig(shape=(self.size,) * 3, small_structure_scale=self.small_structure_scale)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["teacher_width"], d["width"] = str(self.teacher_width), str(self.width)
        return d


Step = Callable[[str], None]  # announces a step to the user


def _trained(result_folder: Path) -> bool:
    return (result_folder / "fold_0" / "checkpoint_final.pth").is_file()


def run_demo(work_dir: Path, config: DemoConfig, announce: Step, training_progress,
             retrain_teacher: bool = False) -> dict:
    """Run every step; returns the evaluation results (also written under ``work_dir/report``).

    ``training_progress(label, schedule)`` returns an object with ``on_epoch``/``on_step``
    callbacks and ``close()`` (the command line passes its tqdm display). ``retrain_teacher``
    trains the teacher instead of using the shipped one (also when none is shipped).
    """
    from recokd.evaluate.comparison import evaluate_models
    from recokd.evaluate.protocol import student_workspace
    from recokd.evaluate.report import write_report
    from recokd.package.export import export_package

    started = time.perf_counter()
    workspace = Workspace.under(work_dir, respect_environment=False).activate()
    raw = workspace.raw / DATASET
    timings: dict[str, float] = {}

    logs = workspace.root / "logs"
    logs.mkdir(exist_ok=True)

    def step(key: str, title: str, work: Callable[[], object]) -> object:
        """Run one step; nnU-Net's console output goes to ``logs/<key>.log`` (progress bars stay)."""
        announce(title)
        t0 = time.perf_counter()
        with open(logs / f"{key}.log", "a", encoding="utf-8") as log_file, contextlib.redirect_stdout(log_file):
            value = work()
        timings[key] = round(time.perf_counter() - t0, 1)
        return value

    if not (raw / "dataset.json").is_file():
        step("phantom", f"Generating {config.train_cases} + {config.test_cases} synthetic CT phantoms "
                        f"({config.size}^3, 5 organs incl. 2 tiny ones)",
             lambda: write_dataset(raw, config.train_cases, config.test_cases, config.seed, config.phantom))
    else:
        announce(f"Reusing the phantom dataset in {raw}")
    preprocessed = step("prepare", "nnU-Net planning and preprocessing", lambda: prepare_dataset(workspace, DATASET))

    def train(key: str, label: str, schedule: Schedule, run: Callable[..., Path], result: Path) -> Path:
        if _trained(result):
            announce(f"Reusing the trained {label} in {result}")
            return result
        resume = (result / "fold_0" / "checkpoint_latest.pth").is_file()  # an interrupted earlier demo
        progress = training_progress(key, schedule)
        try:
            seed_everything(config.seed)
            with augmentation_workers(0, override=True):  # workers would make the batch order a race
                return step(key, f"{'Resuming' if resume else 'Training'} the {label}",
                            lambda: run(progress, resume))
        finally:
            progress.close()

    teacher_plans = student_plans_identifier("nnUNetPlans", config.teacher_width)
    shipped = None if retrain_teacher else shipped_teacher()
    if shipped is None:
        teacher = train("teacher", f"teacher (nnU-Net, width {config.teacher_width})", config.teacher_schedule,
                        lambda p, resume: train_teacher(workspace, DATASET, schedule=config.teacher_schedule,
                                                        resume=resume, on_epoch=p.on_epoch, width=config.teacher_width),
                        workspace.results / DATASET / f"nnUNetTrainer__{teacher_plans}__{CONFIGURATION}")
    else:
        from recokd.package.teacher_folder import teacher_folder_from_package

        announce(f"Using the shipped phantom teacher {shipped}")
        teacher = teacher_folder_from_package(shipped, workspace.root / "shipped_teacher")
        check_teacher_fits_data(teacher, preprocessed)

    students = {}
    for key, (mode, init) in STUDENTS.items():
        label = f"{key.replace('_', ' ')} ({config.width} of the teacher, {mode}, {init} start)"
        student_space = student_workspace(workspace, key, config.seed)
        trainer_name = {"recokd": "ReCoKDTrainer", "none": "ReCoKDTrainer_noKD"}[mode]
        students[key] = train(
            key, label, config.student_schedule,
            lambda p, resume, mode=mode, init=init, space=student_space: run_distillation(
                space, teacher, DATASET, config.width, KDOptions(mode=mode, init=init),
                schedule=config.student_schedule, resume=resume, on_epoch=p.on_epoch, on_step=p.on_step),
            student_space.results / DATASET
            / f"{trainer_name}__{student_plans_identifier(teacher_plans, config.width)}__{CONFIGURATION}")
    workspace.activate()

    packages_dir = workspace.root / "packages"
    trained = {"teacher": teacher} if shipped is None else {}
    packages = step("export", "Exporting model packages", lambda: {
        key: export_package(folder, packages_dir / f"phantom_{key}.recokd.zip", overwrite=True)
        for key, folder in (trained | students).items()})
    packages = ({"teacher": shipped} if shipped is not None else {}) | packages

    cases = [(image, raw / "labelsTs" / image.name.replace("_0000.nii.gz", ".nii.gz"))
             for image in sorted((raw / "imagesTs").glob("*_0000.nii.gz"))]
    evaluation = step("evaluate", f"Segmenting {len(cases)} held-out phantoms with each model (CPU)",
                      lambda: evaluate_models(packages, cases, device="cpu"))
    for key, (mode, init) in STUDENTS.items():
        evaluation[key].update(mode=mode, init=init)
    if shipped is None:  # what a shipped teacher's card says about it
        export_package(teacher, packages_dir / f"{TEACHER_NAME}.recokd.zip", name=TEACHER_NAME, overwrite=True,
                       metrics=_card_metrics(evaluation["teacher"]),
                       extra_card={"description": "Phantom teacher of the ReCoKD demo: nnU-Net at half width, "
                                                  f"{config.teacher_schedule.epochs} x "
                                                  f"{config.teacher_schedule.iterations_per_epoch} steps, seed "
                                                  f"{config.seed} (recokd demo --retrain-teacher).",
                                   "demo_config": config.to_dict()})
    summary = {
        "benchmark": "demo",
        "title": "ReCoKD demo on the synthetic CT phantom",
        "dataset": DATASET,
        "teacher": "shipped" if shipped is not None else "trained",
        "models": evaluation,
        "config": config.to_dict(),
        "step_seconds": timings,
        "total_seconds": round(time.perf_counter() - started, 1),
        "packages": {key: str(path) for key, path in packages.items()},
    }
    report_dir = workspace.root / "report"
    summary["report"] = {k: str(v) for k, v in write_report(summary, report_dir, "demo").items()}
    return summary


def shipped_teacher() -> Path | None:
    """The bundled phantom teacher package, if this installation has one."""
    from recokd.package.registry import PACKAGE_SUFFIX, bundled_models_dir

    folder = bundled_models_dir()
    path = folder / f"{TEACHER_NAME}{PACKAGE_SUFFIX}" if folder is not None else None
    return path if path is not None and path.is_file() else None


def check_teacher_fits_data(teacher: Path, preprocessed: Path) -> None:
    """The teacher must have been planned for data preprocessed as this dataset was; else say how to retrain."""
    teacher_plans = json.loads((teacher / "plans.json").read_text(encoding="utf-8"))
    data_plans = json.loads((preprocessed / "nnUNetPlans.json").read_text(encoding="utf-8"))
    pairs = [(key, teacher_plans["configurations"][CONFIGURATION].get(key),
              data_plans["configurations"][CONFIGURATION].get(key)) for key in PREPROCESSING_KEYS]
    pairs += [(key, teacher_plans.get(key), data_plans.get(key))
              for key in ("transpose_forward", "foreground_intensity_properties_per_channel")]
    differing = [key for key, a, b in pairs if not _close(a, b)]
    if differing:
        raise RecokdError(f"The shipped phantom teacher was planned for other data than this demo's "
                          f"({', '.join(differing)} differ): a work folder left by an older demo needs a fresh "
                          "--work-dir; otherwise rerun with --retrain-teacher to train a teacher for this data.")


def _close(a, b) -> bool:
    """Equal JSON values, numbers to 6 significant digits (fingerprints differ in the last bits across versions)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def _card_metrics(entry: dict) -> dict:
    return {"test_cases": len(entry["cases"]), "test_mean_dice": entry["mean_dice"],
            "test_dice_per_class": entry["dice_per_class"], "test_mean_hd95_mm": entry["mean_hd95_mm"]}
