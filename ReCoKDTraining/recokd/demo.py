"""``recokd demo``: the whole product on the synthetic phantom, on a laptop CPU, in minutes.

generate phantom -> nnU-Net plan + preprocess -> train a teacher (nnU-Net's trainer, short
schedule) -> distil a ReCo-KD student and train the same student without KD -> export the
three model packages -> segment the held-out cases with each -> Dice per class, CPU time,
a report with plots. Every step reuses what a previous run left in the work folder, so a
second run (or a run after an interruption) only does what is missing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from recokd.data.phantom import PhantomConfig, write_dataset
from recokd.distill.options import KDOptions
from recokd.nnunet.prepare import prepare_dataset
from recokd.nnunet.student_plans import student_plans_identifier
from recokd.nnunet.training import Schedule, run_distillation, train_teacher
from recokd.workspace import Workspace

DATASET = "Dataset990_ReCoKDPhantom"


@dataclass(frozen=True)
class DemoConfig:
    """The demo's sizes, chosen so that a 2-core CPU finishes in well under 15 minutes.

    The teacher is nnU-Net's plans at half width (a "small teacher": full width needs hours on
    a CPU to converge); the students are ``width`` of the teacher (1/2 of the half-width teacher:
    a quarter of its parameters, 1/16 of nnU-Net's default; at 1/4 the students rarely left the
    all-background phase within the schedule). On the phantom, nnU-Net
    predicts only background for its first ~100 iterations (measured: 110 at 48^3), so every
    model gets 512 (about 3.5 minutes for the teacher on 2 cores).
    """

    train_cases: int = 16
    test_cases: int = 4
    size: int = 40
    seed: int = 0
    teacher_width: Fraction = Fraction(1, 2)
    width: Fraction = Fraction(1, 2)
    teacher_schedule: Schedule = field(default_factory=lambda: Schedule(32, 16, 2))
    student_schedule: Schedule = field(default_factory=lambda: Schedule(32, 16, 2))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["teacher_width"], d["width"] = str(self.teacher_width), str(self.width)
        return d


Step = Callable[[str], None]  # announces a step to the user


def _trained(result_folder: Path) -> bool:
    return (result_folder / "fold_0" / "checkpoint_final.pth").is_file()


def run_demo(work_dir: Path, config: DemoConfig, announce: Step, training_progress) -> dict:
    """Run every step; returns the evaluation results (also written under ``work_dir/report``).

    ``training_progress(label, schedule)`` returns an object with ``on_epoch``/``on_step``
    callbacks and ``close()`` (the command line passes its tqdm display).
    """
    from recokd.evaluate.comparison import evaluate_models
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

    phantom = PhantomConfig(shape=(config.size,) * 3)
    if not (raw / "dataset.json").is_file():
        step("phantom", f"Generating {config.train_cases} + {config.test_cases} synthetic CT phantoms "
                        f"({config.size}^3, 5 organs incl. 2 tiny ones)",
             lambda: write_dataset(raw, config.train_cases, config.test_cases, config.seed, phantom))
    else:
        announce(f"Reusing the phantom dataset in {raw}")
    step("prepare", "nnU-Net planning and preprocessing", lambda: prepare_dataset(workspace, DATASET))

    def train(key: str, label: str, schedule: Schedule, run: Callable[..., Path], result: Path) -> Path:
        if _trained(result):
            announce(f"Reusing the trained {label} in {result}")
            return result
        resume = (result / "fold_0" / "checkpoint_latest.pth").is_file()  # an interrupted earlier demo
        progress = training_progress(key, schedule)
        try:
            return step(key, f"{'Resuming' if resume else 'Training'} the {label}", lambda: run(progress, resume))
        finally:
            progress.close()

    results = workspace.results / DATASET
    teacher_plans = student_plans_identifier("nnUNetPlans", config.teacher_width)
    teacher = train("teacher", f"teacher (nnU-Net, width {config.teacher_width})", config.teacher_schedule,
                    lambda p, resume: train_teacher(workspace, DATASET, schedule=config.teacher_schedule,
                                                    resume=resume, on_epoch=p.on_epoch, width=config.teacher_width),
                    results / f"nnUNetTrainer__{teacher_plans}__3d_fullres")
    students = {}
    for key, mode, trainer in (("student_recokd", "recokd", "ReCoKDTrainer"),
                               ("student_plain", "none", "ReCoKDTrainer_noKD")):
        label = f"{key.replace('_', ' ')} ({config.width} of the teacher)"
        students[key] = train(
            key, label, config.student_schedule,
            lambda p, resume, mode=mode: run_distillation(
                workspace, teacher, DATASET, config.width, KDOptions(mode=mode), schedule=config.student_schedule,
                resume=resume, on_epoch=p.on_epoch, on_step=p.on_step),
            results / f"{trainer}__{student_plans_identifier(teacher_plans, config.width)}__3d_fullres")

    packages_dir = workspace.root / "packages"
    packages = step("export", "Exporting model packages", lambda: {
        key: export_package(folder, packages_dir / f"phantom_{key}.recokd.zip", overwrite=True)
        for key, folder in {"teacher": teacher, **students}.items()})

    cases = [(image, raw / "labelsTs" / image.name.replace("_0000.nii.gz", ".nii.gz"))
             for image in sorted((raw / "imagesTs").glob("*_0000.nii.gz"))]
    evaluation = step("evaluate", f"Segmenting {len(cases)} held-out phantoms with each model (CPU)",
                      lambda: evaluate_models(packages, cases, device="cpu"))
    summary = {
        "benchmark": "demo",
        "title": "ReCoKD demo on the synthetic CT phantom",
        "dataset": DATASET,
        "models": evaluation,
        "config": config.to_dict(),
        "step_seconds": timings,
        "total_seconds": round(time.perf_counter() - started, 1),
        "packages": {key: str(path) for key, path in packages.items()},
    }
    report_dir = workspace.root / "report"
    summary["report"] = {k: str(v) for k, v in write_report(summary, report_dir, "demo").items()}
    return summary
