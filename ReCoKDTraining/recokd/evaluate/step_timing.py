"""What distillation costs per training step: the KD step against the plain student's step.

Both steps are the real :class:`~recokd.nnunet.trainer.ReCoKDTrainer` ``train_step`` (forward,
loss, backward, clipping, optimiser, EMA), built for the same student plans from the same
teacher, in one process, on one batch drawn once from nnU-Net's training data loader. The
plain trainer (:class:`~recokd.nnunet.trainer.ReCoKDTrainer_noKD`) starts from the KD
trainer's student weights. The two are stepped alternately, so a slower or busier moment of
the machine hits both alike, and each step is timed alone with the device synchronised before
and after it. Lambda is set to its post-warm-up value; the KD terms are computed at every
epoch anyway, so this only keeps the measured step the one a long run spends its time in.

The trainers write their logs into a temporary results folder, never into a real run's.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from recokd.distill.options import KDOptions
from recokd.evaluate.timing import timed
from recokd.nnunet.augmentation import augmentation_workers
from recokd.nnunet.training import build_student_trainer
from recokd.workspace import Workspace

log = logging.getLogger(__name__)

CPU = torch.device("cpu")


@dataclass(frozen=True)
class StepTiming:
    """Median seconds per training step of a KD mode and of the plain student, on the same batch."""

    kd_mode: str
    kd_step_s: float
    plain_step_s: float
    steps: int
    warmup: int
    device: str
    batch_shape: tuple[int, ...]
    width: str
    threads: int  # PyTorch's CPU threads during the measurement
    kd_loss_compiled: bool = False  # the trainer compiled the KD loss (on a GPU, unless nnUNet_compile is off)

    @property
    def ratio(self) -> float:
        """KD step time over plain step time (the issue's target: at most 1.6 on a GPU)."""
        return self.kd_step_s / self.plain_step_s

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"batch_shape": list(self.batch_shape), "ratio": self.ratio}


def time_alternately(steps: dict[str, Callable[[], object]], repeats: int, warmup: int,
                     device: torch.device = CPU) -> dict[str, list[float]]:
    """Seconds of each call, ``warmup`` untimed rounds first, then ``repeats`` rounds of one call each, in turn."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(warmup + repeats):
        for name, step in steps.items():
            _, seconds = timed(step, device)
            if round_index >= warmup:
                times[name].append(seconds)
    return times


def measure_kd_step_ratio(
    workspace: Workspace,
    teacher_folder: Path,
    dataset: str | int,
    width: Fraction,
    options: KDOptions | None = None,
    device: torch.device = CPU,
    steps: int = 10,
    warmup: int = 2,
    fold: int = 0,
    teacher_fold: int | str = 0,
    teacher_checkpoint: str = "checkpoint_final.pth",
) -> StepTiming:
    """Time ``steps`` KD steps (mode ``options.mode``, default ReCo-KD) against as many plain steps, on one batch."""
    options = dataclasses.replace(options or KDOptions(), init="random")  # a step costs the same from any start
    if options.mode == "none":
        raise ValueError("The KD step is timed against mode 'none'; give a KD mode ('recokd' or 'logit').")
    teacher_folder = Path(teacher_folder).resolve()
    with tempfile.TemporaryDirectory(prefix="recokd-step-timing-") as scratch, \
            _scratch_results(workspace, Path(scratch)), augmentation_workers(0, override=True):  # one batch: no workers
        def build(kd_options: KDOptions):
            trainer = build_student_trainer(workspace, teacher_folder, dataset, width, kd_options, fold, device,
                                            teacher_fold, teacher_checkpoint)
            trainer.initialize()
            trainer.network.train()
            trainer.current_epoch = trainer.num_epochs - 1  # lambda at its full value (after the warm-up ramp)
            return trainer

        kd = build(options)
        plain = build(dataclasses.replace(options, mode="none"))
        plain.network.load_state_dict(kd.network.state_dict())
        loader, _ = kd.get_dataloaders()
        batch = next(loader)
        times = time_alternately({"kd": lambda: kd.train_step(batch), "plain": lambda: plain.train_step(batch)},
                                 steps, warmup, device)
    timing = StepTiming(options.mode, statistics.median(times["kd"]), statistics.median(times["plain"]), steps,
                        warmup, str(device), tuple(batch["data"].shape), str(width), torch.get_num_threads(),
                        hasattr(kd.kd_loss, "_orig_mod"))
    log.info("KD step (%s) %.3f s, plain step %.3f s: ratio %.2f on %s", timing.kd_mode, timing.kd_step_s,
             timing.plain_step_s, timing.ratio, device)
    return timing


@contextmanager
def _scratch_results(workspace: Workspace, scratch: Path) -> Iterator[None]:
    dataclasses.replace(workspace, results=scratch).activate()
    try:
        yield
    finally:
        workspace.activate()
