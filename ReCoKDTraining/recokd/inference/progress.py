"""Progress events, cancellation, and the ways the command line shows progress.

A segmentation run goes through fixed stages. Each stage owns a share of one overall fraction
(0..1), so a GUI can draw a single bar and still say what is happening:

=================  ===========  ====================================================
stage              fraction     what happens
=================  ===========  ====================================================
``loading``        0.00--0.05   model package and image read from disk
``preprocessing``  0.05--0.15   nnU-Net's cropping, normalisation and resampling
``predicting``     0.15--0.85   sliding window, advanced per tile
``resampling``     0.85--0.95   logits back to the input grid, one class at a time
``writing``        0.95--1.00   the label file, written atomically
=================  ===========  ====================================================

Fractions never go backwards, even when a stage is repeated (an out-of-memory retry).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TextIO

from recokd.errors import CancelledError

STAGE_SPANS: dict[str, tuple[float, float]] = {
    "loading": (0.0, 0.05),
    "preprocessing": (0.05, 0.15),
    "predicting": (0.15, 0.85),
    "resampling": (0.85, 0.95),
    "writing": (0.95, 1.0),
}


@dataclass(frozen=True)
class ProgressEvent:
    """One step of progress: ``stage`` (a key of :data:`STAGE_SPANS`), overall ``fraction`` in [0, 1]."""

    stage: str
    fraction: float
    message: str = ""

    def to_dict(self) -> dict:
        """The JSON-line form: ``{"event": "progress", "stage", "fraction", "message"}``."""
        return {"event": "progress", "stage": self.stage, "fraction": round(self.fraction, 4), "message": self.message}


ProgressCallback = Callable[[ProgressEvent], None]


def rescaled(callback: ProgressCallback | None, start: float, end: float) -> ProgressCallback | None:
    """``callback`` seeing fractions mapped from [0, 1] to [start, end]: one volume inside a batch."""
    if callback is None:
        return None

    def forward(event: ProgressEvent) -> None:
        callback(ProgressEvent(event.stage, start + (end - start) * event.fraction, event.message))

    return forward


class StageProgress:
    """Reports stage-local progress of one volume as overall events whose fraction never decreases.

    ``report("predicting", 0.5, "tile 8/16")`` emits the middle of the predicting span.
    """

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._last = 0.0

    def __call__(self, stage: str, done: float = 0.0, message: str = "") -> None:
        if self._callback is None:
            return
        low, high = STAGE_SPANS[stage]
        self._last = max(self._last, low + (high - low) * min(max(done, 0.0), 1.0))
        self._callback(ProgressEvent(stage, self._last, message))


class CancelToken:
    """A request to stop, set from another thread, a signal handler or a callback.

    Long work checks it at safe points (between forward passes, stages and classes) and raises
    :class:`~recokd.errors.CancelledError`; nothing blocks on it. A plain attribute rather than
    a ``threading.Event`` keeps :meth:`cancel` safe to call from a signal handler.
    """

    def __init__(self) -> None:
        self.reason = ""

    @property
    def cancelled(self) -> bool:
        return bool(self.reason)

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason or "cancelled"

    def raise_if_cancelled(self) -> None:
        if self.reason:
            raise CancelledError(self.reason)


def raise_if_cancelled(cancel: CancelToken | None) -> None:
    """:meth:`CancelToken.raise_if_cancelled` for an optional token."""
    if cancel is not None:
        cancel.raise_if_cancelled()


class Reporter(Protocol):
    """What ``recokd segment`` tells its user: progress events, then a result or an error."""

    def __call__(self, event: ProgressEvent) -> None: ...

    def result(self, outputs: list[dict], labels: list[dict]) -> None: ...

    def error(self, message: str) -> None: ...


class JsonLinesReporter:
    """One JSON object per line, flushed at once, for GUIs that run ``recokd segment`` as a subprocess.

    Lines: ``{"event": "progress", "stage", "fraction", "message"}`` while working, then either
    ``{"event": "result", "outputs": [{"input", "output", "seconds", "rss_bytes"}], "labels": [...]}`` or
    ``{"event": "error", "message"}``.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def _write(self, obj: dict) -> None:
        self._stream.write(json.dumps(obj) + "\n")
        self._stream.flush()

    def __call__(self, event: ProgressEvent) -> None:
        self._write(event.to_dict())

    def result(self, outputs: list[dict], labels: list[dict]) -> None:
        self._write({"event": "result", "outputs": outputs, "labels": labels})

    def error(self, message: str) -> None:
        self._write({"event": "error", "message": message})


class BarReporter:
    """A tqdm bar on stderr in percent, its description the current stage."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=100, unit="%", file=sys.stderr, bar_format="{desc:<14}{percentage:3.0f}%|{bar}| {elapsed}")

    def __call__(self, event: ProgressEvent) -> None:
        self._bar.set_description_str(event.stage, refresh=False)
        self._bar.n = round(100 * event.fraction, 1)
        self._bar.refresh()

    def result(self, outputs: list[dict], labels: list[dict]) -> None:
        self._bar.close()

    def error(self, message: str) -> None:
        self._bar.close()


class SilentReporter:
    """Shows nothing (``--progress none``); errors still reach stderr through the command line."""

    def __call__(self, event: ProgressEvent) -> None:
        pass

    def result(self, outputs: list[dict], labels: list[dict]) -> None:
        pass

    def error(self, message: str) -> None:
        pass
