"""The process runner: progress-line parsing, states, failures and cancel, on real child processes
(small Python scripts written to ``tmp_path``). Needs no MRML."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
from bridge_support import Recorder, alive, wait_for
from ReCoKDSegmentLib.runner import (
    TRANSITIONS,
    LineSplitter,
    ParsedLine,
    ProcessRunner,
    ProgressUpdate,
    RunnerState,
    Step,
    parse_line,
    progress_text,
)

S = RunnerState


def script(tmp_path: Path, body: str, name: str = "child.py") -> list[str]:
    path = tmp_path / name
    path.write_text("import json, os, subprocess, sys, time\n" + textwrap.dedent(body))
    return [sys.executable, str(path)]


# -- parsing --------------------------------------------------------------------------------


def test_progress_result_and_error_events_are_recognised():
    kind, update = parse_line('{"event": "progress", "stage": "predicting", "fraction": 0.25, "message": "tile 3/12"}')
    assert kind == "progress"
    assert update == ProgressUpdate("predicting", 0.25, "tile 3/12")
    assert parse_line('{"event": "result", "outputs": []}') == ParsedLine("result", {"event": "result", "outputs": []})
    assert parse_line('{"event": "error", "message": "no GPU"}') == ParsedLine("error", "no GPU")


@pytest.mark.parametrize(
    "line",
    ["plain log text", '{"event": "progress", "stage": "x"', "[1, 2, 3]", '{"no_event": 1}', '{"event": "surprise"}',
     "{not json at all}"],
)
def test_anything_else_is_log_text(line):
    assert parse_line(line) == ParsedLine("log", line)


def test_progress_fields_are_tolerant():
    assert ProgressUpdate.from_event({"fraction": 1.7}).fraction == 1.0
    assert ProgressUpdate.from_event({"fraction": -3}).fraction == 0.0
    assert ProgressUpdate.from_event({"fraction": "lots"}).fraction is None
    assert ProgressUpdate.from_event({"fraction": float("nan")}).fraction is None
    update = ProgressUpdate.from_event({"stage": "training", "epoch": "3", "epochs": 50, "fraction": 0.06})
    assert (update.epoch, update.epochs) == (3, 50)


def test_partial_lines_wait_for_the_rest():
    splitter = LineSplitter()
    assert splitter.feed('{"event": "progress", ') == []
    assert splitter.feed('"fraction": 0.5}\nlog') == ['{"event": "progress", "fraction": 0.5}']
    assert splitter.feed(" text\r\n10%|##\r20%|####\r") == ["log text", "10%|##", "20%|####"]
    assert splitter.feed("\n\n") == []
    assert splitter.feed("tail without newline") == []
    assert splitter.flush() == ["tail without newline"]
    assert splitter.flush() == []


def test_progress_text():
    assert progress_text(None, 0) == "Starting..."
    assert progress_text(ProgressUpdate("predicting", 0.5, "tile 6/12"), 30.0) == (
        "Predicting: tile 6/12 (50%, about 30 s left)")
    assert progress_text(ProgressUpdate("training", 0.1, "", epoch=5, epochs=50), 600.0) == (
        "Training: epoch 5/50 (10%, about 1.5 h left)")
    assert progress_text(ProgressUpdate("predicting", 0.25), 60.0) == "Predicting (25%, about 3 min left)"
    assert progress_text(ProgressUpdate("loading", None, "model"), 1.0) == "Loading: model"
    assert progress_text(ProgressUpdate("loading", 0.01), 1.0) == "Loading (1%)"
    assert progress_text(ProgressUpdate("predicting", 0.15, "predicting"), 0.0) == "Predicting (15%)"


def test_transition_table_allows_exactly_the_documented_moves():
    assert TRANSITIONS[S.CANCELLING] == {S.IDLE}
    assert S.CANCELLING not in TRANSITIONS[S.IMPORTING]
    assert S.IMPORTING not in TRANSITIONS[S.IDLE]
    assert S.INSTALLING not in TRANSITIONS[S.RUNNING]
    for state in (S.IDLE, S.DONE, S.FAILED):
        assert TRANSITIONS[state] == {S.INSTALLING, S.RUNNING}


# -- real processes -------------------------------------------------------------------------


def test_progress_log_and_result_stream_through_a_real_process(tmp_path):
    command = script(tmp_path, """
        out = sys.stdout
        out.write('{"event": "progress", "stage": "loading", '); out.flush(); time.sleep(0.2)
        out.write('"fraction": 0.1, "message": "model"}\\n'); out.flush()
        print("plain log line", flush=True)
        print("warning on stderr", file=sys.stderr, flush=True)
        print('{"event": "progress", "stage": "predicting", "fraction": 0.5, "message": "tile 1/2"}', flush=True)
        print('{"event": "progress", broken json', flush=True)
        print(json.dumps({"event": "result", "outputs": [{"output": "x"}], "labels": []}), flush=True)
        out.write("last words without newline"); out.flush()
    """)
    recorder = Recorder()
    runner = recorder.runner()
    runner.start([Step(command, "Segmentation", expects_result=True)])

    assert runner.wait(timeout=20) is S.DONE
    assert recorder.states == [S.RUNNING, S.DONE]
    assert [(p.stage, p.fraction) for p in recorder.progress] == [("loading", 0.1), ("predicting", 0.5)]
    assert runner.output == {"event": "result", "outputs": [{"output": "x"}], "labels": []}
    for line in ("plain log line", "warning on stderr", '{"event": "progress", broken json', "last words without newline"):
        assert line in recorder.logs
    assert not any(line.startswith('{"event": "progress", "stage"') for line in recorder.logs)
    assert runner.error is None


def test_error_event_fails_the_run_with_its_message(tmp_path):
    command = script(tmp_path, """
        print('{"event": "progress", "stage": "loading", "fraction": 0.0}', flush=True)
        print('{"event": "error", "message": "input.nrrd: not a 3D image"}', flush=True)
        sys.exit(2)
    """)
    finished = []
    runner = ProcessRunner()
    runner.start([Step(command, "Segmentation", expects_result=True)], on_finished=[lambda: finished.append(True)])

    assert runner.wait(timeout=20) is S.FAILED
    assert runner.error == "Segmentation failed: input.nrrd: not a 3D image"
    assert finished == [True]


def test_error_event_fails_even_with_exit_code_zero(tmp_path):
    command = script(tmp_path, """print('{"event": "error", "message": "half done"}')""")
    runner = ProcessRunner()
    runner.start([Step(command, "Segmentation")])
    assert runner.wait(timeout=20) is S.FAILED
    assert "half done" in runner.error


def test_crash_without_error_event_reports_the_last_log_line(tmp_path):
    command = script(tmp_path, """
        print("recokd segment: error: model 'x' is not installed", file=sys.stderr)
        sys.exit(2)
    """)
    runner = ProcessRunner()
    runner.start([Step(command, "Segmentation")])
    assert runner.wait(timeout=20) is S.FAILED
    assert runner.error == "Segmentation failed: recokd segment: error: model 'x' is not installed"
    assert "recokd segment: error: model 'x' is not installed" in runner.log_lines


def test_missing_result_is_a_failure_when_one_is_expected(tmp_path):
    runner = ProcessRunner()
    runner.start([Step(script(tmp_path, "print('all fine, honestly')"), "Segmentation", expects_result=True)])
    assert runner.wait(timeout=20) is S.FAILED
    assert runner.error == "Segmentation ended without reporting a result"


def test_importer_runs_in_importing_state_and_its_failure_fails_the_run(tmp_path):
    command = script(tmp_path, """print('{"event": "result", "value": 41}')""")
    recorder = Recorder()
    runner = recorder.runner()
    seen = []

    def importer(outcome):
        seen.append(runner.state)
        return outcome.result["value"] + 1

    runner.start([Step(command, "Step", importer=importer)])
    assert runner.wait(timeout=20) is S.DONE
    assert (seen, runner.output) == ([S.IMPORTING], 42)
    assert recorder.states == [S.RUNNING, S.IMPORTING, S.DONE]

    def broken(outcome):
        raise OSError("disk full")

    runner.start([Step(command, "Step", importer=broken)])
    assert runner.wait(timeout=20) is S.FAILED
    assert runner.error == "Importing the result of step failed: disk full"


def test_steps_chain_from_installing_to_running_with_the_previous_output(tmp_path):
    install = script(tmp_path, "print('Successfully installed recokd-0.1.0')", "install.py")
    produce = script(tmp_path, """print(json.dumps({"event": "result", "package": "/tmp/student.zip"}))""", "produce.py")
    consume = script(tmp_path, "print('added', sys.argv[1])", "consume.py")
    recorder = Recorder()
    runner = recorder.runner()
    runner.start([
        Step(install, "Installing", state=S.INSTALLING),
        Step(produce, "Distillation", expects_result=True),
        lambda result: Step([*consume, result["package"]], "Adding the model"),
    ])

    assert runner.wait(timeout=30) is S.DONE
    assert recorder.states == [S.INSTALLING, S.RUNNING, S.RUNNING, S.DONE]
    assert "added /tmp/student.zip" in recorder.logs
    assert "Successfully installed recokd-0.1.0" in recorder.logs


def test_a_missing_program_fails_cleanly(tmp_path):
    runner = ProcessRunner()
    runner.start([Step([str(tmp_path / "no-such-python"), "-m", "recokd"], "Segmentation")])
    assert runner.state is S.FAILED
    assert runner.error.startswith("Could not start segmentation")


def test_only_one_run_at_a_time_and_runs_start_with_a_step(tmp_path):
    runner = ProcessRunner()
    with pytest.raises(ValueError, match="starts with a Step"):
        runner.start([lambda previous: None])
    runner.start([Step(script(tmp_path, "time.sleep(30)"), "Sleeping")])
    try:
        with pytest.raises(RuntimeError, match="in progress"):
            runner.start([Step(script(tmp_path, "pass", "other.py"), "Other")])
    finally:
        runner.cancel()
        runner.wait(timeout=20)


@pytest.mark.skipif(os.name == "nt", reason="checks POSIX process groups")
def test_cancel_ends_the_whole_process_tree(tmp_path):
    pid_file = tmp_path / "pids"
    command = script(tmp_path, f"""
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pid_file)!r}, "w").write(f"{{os.getpid()}} {{grandchild.pid}}")
        for i in range(10000):
            print(json.dumps({{"event": "progress", "stage": "predicting", "fraction": i / 10000}}), flush=True)
            time.sleep(0.05)
    """)
    recorder = Recorder()
    runner = recorder.runner()
    imported = []
    finished = []
    runner.start([Step(command, "Segmentation", importer=imported.append)], on_finished=[lambda: finished.append(1)])
    wait_for(lambda: runner.poll() and len(recorder.progress) >= 2 and pid_file.exists())
    pids = [int(p) for p in pid_file.read_text().split()]

    runner.cancel()
    assert runner.state is S.CANCELLING
    assert runner.wait(timeout=20) is S.IDLE

    assert runner.cancelled and runner.error is None
    assert recorder.states == [S.RUNNING, S.CANCELLING, S.IDLE]
    assert imported == [] and finished == [1]
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=5)


@pytest.mark.skipif(os.name == "nt", reason="SIGTERM is POSIX")
def test_cancel_kills_a_process_that_ignores_sigterm_after_the_grace_period(tmp_path):
    ready = tmp_path / "ready"
    command = script(tmp_path, f"""
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(ready)!r}, "w").write(str(os.getpid()))
        time.sleep(600)
    """)
    runner = ProcessRunner(grace_seconds=0.5)
    runner.start([Step(command, "Stubborn")])
    wait_for(ready.exists)
    started = time.monotonic()
    runner.cancel()
    assert runner.wait(timeout=20) is S.IDLE
    assert 0.4 < time.monotonic() - started < 10
    assert not alive(int(ready.read_text()))


@pytest.mark.skipif(os.name == "nt", reason="checks POSIX process groups")
def test_leftover_children_holding_the_pipes_neither_hang_the_run_nor_survive_it(tmp_path):
    pid_file = tmp_path / "pid"
    command = script(tmp_path, f"""
        leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # inherits stdout
        open({str(pid_file)!r}, "w").write(str(leftover.pid))
        print(json.dumps({{"event": "result", "ok": True}}), flush=True)
    """)
    runner = ProcessRunner()
    runner.PIPE_DRAIN_SECONDS = 0.5
    runner.start([Step(command, "Segmentation", expects_result=True)])

    assert runner.wait(timeout=20) is S.DONE, runner.error
    assert runner.output == {"event": "result", "ok": True}
    wait_for(lambda: not alive(int(pid_file.read_text())), timeout=5)


def test_cancel_when_nothing_runs_changes_nothing():
    runner = ProcessRunner()
    runner.cancel()
    assert runner.state is S.IDLE and not runner.cancelled


def test_wait_timeout_cancels_the_run(tmp_path):
    runner = ProcessRunner(grace_seconds=0.5)
    runner.start([Step(script(tmp_path, "time.sleep(60)"), "Sleeping")])
    with pytest.raises(TimeoutError):
        runner.wait(timeout=0.3)
    assert runner.state is S.IDLE and runner.cancelled
