"""Background processes with ``--progress json`` output, as a small explicit state machine.

``recokd ... --progress json`` writes one JSON object per stdout line::

    {"event": "progress", "stage": "predicting", "fraction": 0.4, "message": "tile 12/30"}
    {"event": "progress", "stage": "training", "epoch": 3, "epochs": 50, "fraction": 0.06, "message": "..."}
    {"event": "result", ...}        once, on success
    {"event": "error", "message": "..."}   on failure (and a non-zero exit code)

Anything else (stderr, or stdout lines that are not such objects) is log text.

:class:`ProcessRunner` runs a sequence of :class:`Step` s, one process at a time. Nothing blocks:
the owner calls :meth:`ProcessRunner.poll` often (the Slicer widget from a ``QTimer``; the
console API through :meth:`ProcessRunner.wait`), and ``poll`` reports progress, log lines and
state changes through callbacks. States and the transitions between them::

    IDLE/DONE/FAILED -> INSTALLING | RUNNING              start()
    INSTALLING       -> INSTALLING | RUNNING | IMPORTING | DONE | FAILED | CANCELLING
    RUNNING          -> RUNNING | IMPORTING | DONE | FAILED | CANCELLING
    IMPORTING        -> INSTALLING | RUNNING | DONE | FAILED   (importer done; next step or end)
    CANCELLING       -> IDLE                                  (whole process tree gone)

Each process starts in a new process group (POSIX session / Windows process group), so a
cancel ends the process *and everything it started* (DataLoader workers, torchrun ranks).
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)


class RunnerState(Enum):
    IDLE = "Idle"
    INSTALLING = "Installing"
    RUNNING = "Running"
    IMPORTING = "Importing"
    CANCELLING = "Cancelling"
    FAILED = "Failed"
    DONE = "Done"


ACTIVE_STATES = frozenset({RunnerState.INSTALLING, RunnerState.RUNNING, RunnerState.IMPORTING, RunnerState.CANCELLING})
_S = RunnerState
TRANSITIONS: dict[RunnerState, frozenset[RunnerState]] = {
    _S.IDLE: frozenset({_S.INSTALLING, _S.RUNNING}),
    _S.DONE: frozenset({_S.INSTALLING, _S.RUNNING}),
    _S.FAILED: frozenset({_S.INSTALLING, _S.RUNNING}),
    _S.INSTALLING: frozenset({_S.INSTALLING, _S.RUNNING, _S.IMPORTING, _S.DONE, _S.FAILED, _S.CANCELLING}),
    _S.RUNNING: frozenset({_S.RUNNING, _S.IMPORTING, _S.DONE, _S.FAILED, _S.CANCELLING}),
    _S.IMPORTING: frozenset({_S.INSTALLING, _S.RUNNING, _S.DONE, _S.FAILED}),
    _S.CANCELLING: frozenset({_S.IDLE}),
}


@dataclass(frozen=True)
class ProgressUpdate:
    """One ``progress`` event. ``fraction`` is overall progress 0-1, or None when not given."""

    stage: str
    fraction: float | None
    message: str = ""
    epoch: int | None = None
    epochs: int | None = None

    @classmethod
    def from_event(cls, event: Mapping) -> ProgressUpdate:
        def number(key, kind):
            try:
                return kind(event[key])
            except (KeyError, TypeError, ValueError):
                return None

        fraction = number("fraction", float)
        if fraction is not None:
            fraction = min(max(fraction, 0.0), 1.0) if fraction == fraction else None  # NaN -> None
        return cls(
            stage=str(event.get("stage", "")),
            fraction=fraction,
            message=str(event.get("message", "")),
            epoch=number("epoch", int),
            epochs=number("epochs", int),
        )


class ParsedLine(NamedTuple):
    """``kind`` is ``"progress"`` (value: ProgressUpdate), ``"result"`` (value: the event dict),
    ``"error"`` (value: message) or ``"log"`` (value: the line)."""

    kind: str
    value: Any


def parse_line(line: str) -> ParsedLine:
    """Classify one line of output; anything that is not a known JSON event is log text."""
    text = line.strip()
    if text.startswith("{"):
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if isinstance(event, dict):
            kind = event.get("event")
            if kind == "progress":
                return ParsedLine("progress", ProgressUpdate.from_event(event))
            if kind == "result":
                return ParsedLine("result", event)
            if kind == "error":
                return ParsedLine("error", str(event.get("message") or "unknown error"))
    return ParsedLine("log", line.rstrip())


class LineSplitter:
    """Turns chunks of text into complete lines; a partial line waits for the rest.

    ``\\r`` ends a line too (progress bars such as tqdm redraw with it); empty lines are dropped.
    """

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, text: str) -> list[str]:
        lines = (self._pending + text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._pending = lines.pop()
        return [line for line in lines if line.strip()]

    def flush(self) -> list[str]:
        rest, self._pending = self._pending, ""
        return [rest] if rest.strip() else []


@dataclass(frozen=True)
class StepOutcome:
    """What a finished step produced: its ``result`` event (or None) and its plain stdout lines."""

    result: dict | None
    stdout_lines: list[str]


@dataclass
class Step:
    """One process of a run.

    ``importer`` runs in state IMPORTING after a successful exit and returns the step's output
    (a segmentation node, a list of files, ...); without one the output is the ``result`` event.
    ``expects_result``: a zero exit code without a ``result`` event is a failure.
    """

    command: Sequence[str]
    description: str
    state: RunnerState = RunnerState.RUNNING
    importer: Callable[[StepOutcome], Any] | None = None
    expects_result: bool = False
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in (RunnerState.INSTALLING, RunnerState.RUNNING):
            raise ValueError(f"a step runs as INSTALLING or RUNNING, not {self.state}")
        if not self.command or isinstance(self.command, str):
            raise ValueError("a step's command is a non-empty argument list")


# A step, or a function building the next step from the previous step's output (None: stop).
StepSpec = Step | Callable[[Any], "Step | None"]


def _popen_group_options() -> dict:
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


def signal_process_tree(process: subprocess.Popen, force: bool) -> None:
    """End ``process`` and everything in its process group: SIGTERM (``force``: SIGKILL) to the
    group on POSIX, ``taskkill /T /F`` on Windows (no gentle stop exists there)."""
    if os.name == "nt":
        subprocess.run(
            ["taskkill", "/T", "/F", "/PID", str(process.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
        )
        return
    try:
        os.killpg(process.pid, signal.SIGKILL if force else signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def _read_stream(stream, name: str, chunks: queue.Queue) -> None:
    """Reader thread: move raw output into ``chunks``; ``None`` marks the end of the stream.
    The thread owns the pipe and closes it (closing it from another thread would block while
    a grandchild that inherited the pipe keeps it open)."""
    try:
        while chunk := stream.read1(65536):
            chunks.put((name, chunk))
    except OSError:
        pass  # broken pipe: same as the end of the stream
    finally:
        stream.close()
        chunks.put((name, None))


class ProcessRunner:
    """Runs :class:`Step` s one after another in background processes; see the module docstring.

    Callbacks (all called from :meth:`poll`, i.e. on the owner's thread):
    ``on_progress(ProgressUpdate)``, ``on_log(str)``, ``on_state(RunnerState)``.
    After a run: ``output`` (last step's output), ``error`` (message when FAILED),
    ``cancelled``, ``log_lines`` (the most recent lines, for an error dialog).
    """

    #: After the process exits, how long to wait for its pipes to close (a grandchild that
    #: inherited them may keep them open) before finishing anyway.
    PIPE_DRAIN_SECONDS = 5.0

    def __init__(
        self,
        on_progress: Callable[[ProgressUpdate], None] | None = None,
        on_log: Callable[[str], None] | None = None,
        on_state: Callable[[RunnerState], None] | None = None,
        grace_seconds: float = 5.0,
        max_log_lines: int = 5000,
    ) -> None:
        self.on_progress = on_progress
        self.on_log = on_log
        self.on_state = on_state
        self.grace_seconds = grace_seconds
        self.state = RunnerState.IDLE
        self.log_lines: deque[str] = deque(maxlen=max_log_lines)
        self._reset()

    def _reset(self) -> None:
        self.output: Any = None
        self.error: str | None = None
        self.cancelled = False
        self.progress: ProgressUpdate | None = None
        self.step: Step | None = None
        self.step_started = 0.0
        self._pending: deque[StepSpec] = deque()
        self._on_finished: list[Callable[[], None]] = []
        self._process: subprocess.Popen | None = None
        self._kill_deadline = 0.0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def elapsed(self) -> float:
        """Seconds since the current (or last) step started."""
        return time.monotonic() - self.step_started if self.step_started else 0.0

    # -- public API -------------------------------------------------------------------------

    def start(self, steps: Sequence[StepSpec], on_finished: Sequence[Callable[[], None]] = ()) -> None:
        """Start the first step. ``on_finished`` callables run once when the run ends (DONE,
        FAILED or cancelled), e.g. to delete temporary files."""
        if self.active:
            raise RuntimeError(f"a run is in progress ({self.state.value}); cancel it or wait for it first")
        if not steps or not isinstance(steps[0], Step):
            raise ValueError("a run starts with a Step")
        self._reset()
        self.log_lines.clear()
        self._pending.extend(steps)
        self._on_finished.extend(on_finished)
        self._start_next(None)

    def poll(self) -> RunnerState:
        """Read what the process wrote, report it, and advance the state. Never blocks."""
        process = self._process
        if process is None:
            return self.state
        self._drain()
        exit_code = process.poll()
        if self.state is RunnerState.CANCELLING:
            if exit_code is None:
                if time.monotonic() >= self._kill_deadline:
                    signal_process_tree(process, force=True)
                return self.state
            signal_process_tree(process, force=True)  # stragglers of the group, if any
            self._close_process()
            self._set_state(RunnerState.IDLE)
            self._run_finishers()
            return self.state
        if exit_code is None:
            return self.state
        if self._open_streams:
            if self._exit_seen is None:
                self._exit_seen = time.monotonic()
            if time.monotonic() - self._exit_seen < self.PIPE_DRAIN_SECONDS:
                return self.state
            signal_process_tree(process, force=True)  # leftover children still hold the pipes
        self._flush_streams()
        self._close_process()
        self._step_finished(exit_code)
        return self.state

    def cancel(self) -> None:
        """Stop the run: the process tree gets SIGTERM, then SIGKILL after ``grace_seconds``.
        The run ends in IDLE with ``cancelled`` set; importers of unfinished steps never run."""
        if self.state not in (RunnerState.INSTALLING, RunnerState.RUNNING):
            return
        self.cancelled = True
        self._pending.clear()
        self._set_state(RunnerState.CANCELLING)
        signal_process_tree(self._process, force=os.name == "nt")
        self._kill_deadline = time.monotonic() + self.grace_seconds

    def wait(self, timeout: float | None = None, idle: Callable[[], None] | None = None, interval: float = 0.05) -> RunnerState:
        """Poll until the run ends (the blocking console API). ``idle`` runs between polls
        (e.g. ``slicer.app.processEvents``). On timeout the run is cancelled and TimeoutError raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() in ACTIVE_STATES:
            if deadline is not None and time.monotonic() > deadline and self.state is not RunnerState.CANCELLING:
                self.cancel()
                while self.poll() in ACTIVE_STATES:
                    time.sleep(interval)
                raise TimeoutError(f"run did not finish within {timeout} s and was cancelled")
            if idle is not None:
                idle()
            time.sleep(interval)
        return self.state

    # -- internals --------------------------------------------------------------------------

    def _set_state(self, state: RunnerState) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"invalid runner transition {self.state.value} -> {state.value}")
        self.state = state
        if self.on_state:
            self.on_state(state)

    def _start_next(self, previous_output: Any) -> None:
        spec = self._pending.popleft()
        try:
            step = spec if isinstance(spec, Step) else spec(previous_output)
        except Exception as error:
            logger.exception("Preparing the next step failed")
            self._fail(f"Preparing the next step failed: {error}")
            return
        if step is None:
            self._pending.clear()
            self._set_state(RunnerState.DONE)
            self._run_finishers()
            return
        self._launch(step)

    def _launch(self, step: Step) -> None:
        self.step = step
        self.step_started = time.monotonic()
        self.progress = None
        self._set_state(step.state)
        self._log(f"{step.description}: {subprocess.list2cmdline([str(a) for a in step.command])}")
        env = dict(os.environ)
        env.update({"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"})
        env.update(step.env)
        try:
            process = subprocess.Popen(
                [str(argument) for argument in step.command],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env, **_popen_group_options(),
            )
        except OSError as error:
            self._fail(f"Could not start {step.description.lower()} ({step.command[0]}): {error}")
            return
        self._process = process
        self._result: dict | None = None
        self._step_error: str | None = None
        self._stdout_lines: list[str] = []
        self._last_log_line = ""
        self._exit_seen: float | None = None
        self._chunks: queue.Queue = queue.Queue()
        self._splitters = {"stdout": LineSplitter(), "stderr": LineSplitter()}
        self._decoders = {name: codecs.getincrementaldecoder("utf-8")(errors="replace") for name in self._splitters}
        self._open_streams = {"stdout", "stderr"}
        for name, stream in (("stdout", process.stdout), ("stderr", process.stderr)):
            threading.Thread(target=_read_stream, args=(stream, name, self._chunks), daemon=True).start()

    def _drain(self) -> None:
        while True:
            try:
                name, chunk = self._chunks.get_nowait()
            except queue.Empty:
                return
            if chunk is None:
                self._open_streams.discard(name)
                self._handle_lines(name, self._splitters[name].feed(self._decoders[name].decode(b"", final=True)))
            else:
                self._handle_lines(name, self._splitters[name].feed(self._decoders[name].decode(chunk)))

    def _flush_streams(self) -> None:
        self._drain()
        for name, splitter in self._splitters.items():
            self._handle_lines(name, splitter.flush())

    def _handle_lines(self, stream: str, lines: list[str]) -> None:
        for line in lines:
            if stream == "stderr":
                self._log(line)
                continue
            kind, value = parse_line(line)
            if kind == "progress":
                self.progress = value
                if self.on_progress:
                    self.on_progress(value)
            elif kind == "result":
                self._result = value
            elif kind == "error":
                self._step_error = value
                self._log(f"Error: {value}")
            else:
                self._stdout_lines.append(value)
                self._log(value)

    def _log(self, line: str) -> None:
        self.log_lines.append(line)
        if line.strip():
            self._last_log_line = line.strip()
        if self.on_log:
            self.on_log(line)

    def _close_process(self) -> None:
        process, self._process = self._process, None
        process.wait()  # already exited: this only reaps it

    def _step_finished(self, exit_code: int) -> None:
        step = self.step
        if exit_code != 0 or self._step_error:
            detail = self._step_error or self._last_log_line or f"exit code {exit_code}"
            self._fail(f"{step.description} failed: {detail}")
            return
        if step.expects_result and self._result is None:
            self._fail(f"{step.description} ended without reporting a result")
            return
        outcome = StepOutcome(self._result, list(self._stdout_lines))
        if step.importer is None:
            output = outcome.result
        else:
            self._set_state(RunnerState.IMPORTING)
            try:
                output = step.importer(outcome)
            except Exception as error:
                logger.exception("Importing the result of %s failed", step.description)
                self._fail(f"Importing the result of {step.description.lower()} failed: {error}")
                return
        self.output = output
        if self._pending:
            self._start_next(output)
        else:
            self._set_state(RunnerState.DONE)
            self._run_finishers()

    def _fail(self, message: str) -> None:
        self.error = message
        self._pending.clear()
        self._log(message)
        self._set_state(RunnerState.FAILED)
        self._run_finishers()

    def _run_finishers(self) -> None:
        finishers, self._on_finished = self._on_finished, []
        for finisher in finishers:
            try:
                finisher()
            except Exception:
                logger.exception("Clean-up after the run failed")


def progress_text(update: ProgressUpdate | None, elapsed_seconds: float) -> str:
    """A status line: stage, message, percentage and, once there is enough to go by, time left.

    A message that only repeats the stage's name is left out ("Predicting", not "Predicting: predicting").
    """
    if update is None:
        return "Starting..."
    details = []
    if update.epoch is not None and update.epochs:
        details.append(f"epoch {update.epoch}/{update.epochs}")
    if update.message and update.message.strip().lower() != update.stage.lower():
        details.append(update.message)
    text = update.stage.capitalize() or "Working"
    if details:
        text += ": " + ", ".join(details)
    if update.fraction is not None:
        text += f" ({update.fraction:.0%}"
        if 0.05 <= update.fraction < 1.0 and elapsed_seconds > 0:
            remaining = elapsed_seconds * (1.0 - update.fraction) / update.fraction
            text += f", about {_duration(remaining)} left"
        text += ")"
    return text


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
