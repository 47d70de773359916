"""Train several models at once, each in its own process: the benchmark's students on one GPU.

A Hippocampus student leaves a GPU mostly idle: nnU-Net's data augmentation on the CPU sets
the pace. Training the three students side by side, each with its share of the CPU cores for
augmentation workers, finishes in little more than the time of one.

Every job runs in a fresh ``spawn`` process (CUDA cannot be forked), so a job must be
picklable: a module-level function, or a :func:`functools.partial` of one. Each job's log
lines carry its name. A job that fails fails the whole call, after the others have finished
(their checkpoints let a restart resume them); an interrupt terminates every job.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
from collections.abc import Callable, Mapping
from pathlib import Path

from recokd.errors import RecokdError
from recokd.nnunet import augmentation

log = logging.getLogger(__name__)

POLL_S = 5.0  # how often the parent looks for a job that died without reporting


def train_concurrently(jobs: Mapping[str, Callable[[], Path]]) -> dict[str, Path]:
    """Run every job in its own process at the same time; returns each job's result folder by name.

    ``nnUNet_n_proc_DA``, when set, is respected; otherwise each job gets
    :func:`~recokd.nnunet.augmentation.workers_per_concurrent_job` workers.
    """
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = os.environ.get(augmentation.VARIABLE) or str(augmentation.workers_per_concurrent_job(len(jobs)))
    processes = {name: context.Process(target=_run_job, args=(name, job, workers, results), name=f"recokd-{name}")
                 for name, job in jobs.items()}
    log.info("Training %s concurrently, %s augmentation workers each", ", ".join(processes), workers)
    try:
        for process in processes.values():
            process.start()
        outcomes = _collect(processes, results)
    finally:
        for process in processes.values():
            if process.is_alive():
                process.terminate()
                process.join()
    failures = {name: outcome for name, outcome in outcomes.items() if not isinstance(outcome, Path)}
    if failures:
        raise RecokdError("Concurrent training failed: " + "; ".join(f"{name}: {why}" for name, why in failures.items())
                          + ". The others finished; run the same command again to resume the failed ones.")
    return outcomes


def _collect(processes: dict, results) -> dict[str, Path | str]:
    """Each job's message (its folder or its error); a job that died without one (killed, crashed) is a failure."""
    outcomes: dict[str, Path | str] = {}
    while len(outcomes) < len(processes):
        try:
            name, outcome = results.get(timeout=POLL_S)
            outcomes[name] = outcome
            continue
        except queue.Empty:
            pass
        silent = [name for name, process in processes.items() if name not in outcomes and not process.is_alive()]
        while silent:  # a job that reported just before it ended: its message is in the queue now
            try:
                name, outcome = results.get(timeout=1)
                outcomes[name] = outcome
            except queue.Empty:
                break
        for name in silent:
            outcomes.setdefault(name, f"the process ended with exit code {processes[name].exitcode} without a result")
    for process in processes.values():
        process.join()
    return outcomes


def _run_job(name: str, job: Callable[[], Path], workers: str, results) -> None:
    """In the child process: log with the job's name, train, report the folder or the error."""
    os.environ[augmentation.VARIABLE] = workers
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [{name}] %(message)s", force=True)
    try:
        results.put((name, Path(job())))
    except BaseException as error:  # reported to the parent, which raises; the traceback stays in this log
        log.exception("%s failed", name)
        results.put((name, f"{type(error).__name__}: {error}"))
