"""Arguments and progress display shared by ``recokd train-teacher`` and ``recokd distill``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from recokd.device import DEVICE_CHOICES
from recokd.nnunet.training import Schedule
from recokd.workspace import DEFAULT_WORK_DIR, Workspace


def add_training_arguments(parser: argparse.ArgumentParser, dataset_required: bool = True) -> None:
    """The training flags; ``dataset_required=False`` for a command that can make its dataset (distill --images)."""
    parser.add_argument("--dataset", required=dataset_required,
                        help="dataset id (e.g. 4) or folder name (Dataset004_Hippocampus)")
    parser.add_argument("--fold", default="0", help="nnU-Net fold (0-4 or 'all'; default 0)")
    parser.add_argument("--epochs", type=int, default=Schedule.epochs, help="default: nnU-Net's 1000")
    parser.add_argument("--iterations-per-epoch", type=int, default=Schedule.iterations_per_epoch)
    parser.add_argument("--val-iterations", type=int, default=Schedule.val_iterations_per_epoch,
                        help="validation iterations per epoch")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in the same folder")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                        help="holds nnUNet_raw/preprocessed/results unless those variables are exported "
                             f"(default ./{DEFAULT_WORK_DIR} or $RECOKD_WORK_DIR)")
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar",
                        help="tqdm bar, JSON lines on stdout (for GUIs), or nothing")


def schedule_from(args) -> Schedule:
    return Schedule(args.epochs, args.iterations_per_epoch, args.val_iterations)


def workspace_from(args) -> Workspace:
    return Workspace.under(args.work_dir)


class TrainingProgress:
    """Shows training progress: a tqdm bar over all iterations, or JSON lines.

    JSON lines: ``{"event": "progress", "stage": "training", "epoch", "epochs", "fraction",
    "message"}`` after every epoch, then ``{"event": "result", ...}`` or ``{"event": "error", ...}``.
    Preparing scans (``distill --images``) comes first, as ``{"event": "progress", "stage":
    "scans", "fraction", "message"}`` (fraction of the scans to prepare) or a bar of its own.
    In JSON mode stdout carries nothing else: :meth:`quiet_stdout` sends nnU-Net's own prints
    to stderr while training runs, so a GUI can read every stdout line as one JSON object.
    """

    def __init__(self, mode: str, schedule: Schedule, label: str) -> None:
        self.mode = mode
        self.schedule = schedule
        self.label = label
        self._stdout = sys.stdout
        self._bar = None  # the training's, shown from its first step (after any scans' own bar)
        self._scans_bar = None
        self._scans_fraction = -1.0

    def quiet_stdout(self) -> contextlib.AbstractContextManager:
        """Inside: ``print`` goes to stderr unless progress is a bar (then the bar and logs share a terminal)."""
        return contextlib.redirect_stdout(sys.stderr) if self.mode != "bar" else contextlib.nullcontext()

    def emit(self, event: dict) -> None:
        if self.mode == "json":
            self._stdout.write(json.dumps(event) + "\n")
            self._stdout.flush()

    def on_scans(self, fraction: float, message: str) -> None:
        """Progress of preparing scans (``fraction`` of them done); JSON lines at most one per percent."""
        if self._scans_bar is None and self.mode == "bar":
            from tqdm import tqdm

            self._scans_bar = tqdm(total=100, desc="scans", unit="%", file=sys.stderr, dynamic_ncols=True,
                                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}")
        if self._scans_bar is not None:
            self._scans_bar.n = round(100 * fraction, 1)
            self._scans_bar.set_postfix_str(message)
            if fraction >= 1:  # its time shows the preparation's alone
                self._scans_bar.close()
        if round(fraction, 2) != round(self._scans_fraction, 2):
            self._scans_fraction = fraction
            self.emit({"event": "progress", "stage": "scans", "fraction": round(fraction, 4), "message": message})

    def _training_bar(self):
        if self._bar is None and self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self.schedule.epochs * self.schedule.iterations_per_epoch, desc=self.label,
                             unit="it", file=sys.stderr, dynamic_ncols=True)
        return self._bar

    def on_step(self, epoch: int, iteration: int, values: dict) -> None:
        if self._training_bar() is not None:
            self._bar.n = epoch * self.schedule.iterations_per_epoch + iteration
            self._bar.set_postfix(epoch=epoch, loss=f"{float(values['loss']):.3f}", refresh=False)
            self._bar.refresh()

    def on_epoch(self, done: int, total: int, values: dict) -> None:
        dice = values.get("mean_fg_dice")
        message = f"epoch {done}/{total}" + (f", pseudo Dice {dice:.3f}" if dice is not None else "")
        if self._training_bar() is not None:
            self._bar.n = done * self.schedule.iterations_per_epoch
            self._bar.set_postfix_str(message)
        self.emit({"event": "progress", "stage": "training", "epoch": done, "epochs": total,
                   "fraction": round(done / total, 4), "message": message, "values": values})

    def close(self) -> None:
        for bar in (self._scans_bar, self._bar):
            if bar is not None:
                bar.close()
