"""nnU-Net v2 planning and preprocessing, called through nnU-Net's own API.

ReCoKD never re-implements any of this: the teacher's plans and preprocessed data are the
student's too (same ``data_identifier``), so a dataset is prepared once.
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path

from recokd.errors import RecokdError
from recokd.workspace import Workspace

log = logging.getLogger(__name__)

DATASET_FOLDER = re.compile(r"^Dataset(\d{3})_\w+$")


def resolve_dataset(workspace: Workspace, dataset: str | int) -> tuple[int, str]:
    """``(id, "DatasetXXX_Name")`` for a dataset given by id or name, looked up in raw and preprocessed."""
    text = str(dataset)
    candidates = {
        folder.name
        for base in (workspace.raw, workspace.preprocessed)
        if base.is_dir()
        for folder in base.iterdir()
        if DATASET_FOLDER.match(folder.name)
    }
    for name in sorted(candidates):
        number = int(DATASET_FOLDER.match(name).group(1))
        if text in (name, name.split("_", 1)[1]) or (text.isdigit() and int(text) == number):
            return number, name
    raise RecokdError(
        f"Dataset '{dataset}' not found in {workspace.raw} or {workspace.preprocessed}. "
        f"Known datasets: {sorted(candidates) or 'none'}. Give its id (e.g. 4) or folder name."
    )


@contextmanager
def _multiprocess_preprocessing():
    """nnU-Net's planning breaks with ``nnUNet_n_proc_DA=0`` (fine for training): lift it here."""
    saved = os.environ.pop("nnUNet_n_proc_DA", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["nnUNet_n_proc_DA"] = saved


def prepare_dataset(
    workspace: Workspace,
    dataset: str | int,
    configuration: str = "3d_fullres",
    num_processes: int = 2,
    verify: bool = True,
) -> Path:
    """Fingerprint, plan (nnU-Net's default ``ExperimentPlanner``) and preprocess one configuration.

    Returns the preprocessed dataset folder (holding ``nnUNetPlans.json``). Idempotent: a
    dataset whose plans and preprocessed data already exist is left alone.
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
        preprocess_dataset,
    )

    workspace.activate()
    dataset_id, name = resolve_dataset(workspace, dataset)
    out = workspace.preprocessed / name
    plans_file = out / "nnUNetPlans.json"
    if plans_file.is_file() and (out / f"nnUNetPlans_{configuration}").is_dir():
        log.info("%s is already planned and preprocessed (%s)", name, out)
        return out
    with _multiprocess_preprocessing():
        log.info("Fingerprinting %s%s", name, " (with nnU-Net's integrity check)" if verify else "")
        extract_fingerprint_dataset(dataset_id, num_processes=num_processes, check_dataset_integrity=verify,
                                    clean=True, verbose=False, show_progress_bar=True)
        log.info("Planning %s", name)
        plan_experiment_dataset(dataset_id)
        log.info("Preprocessing %s (%s)", name, configuration)
        preprocess_dataset(dataset_id, "nnUNetPlans", (configuration,), (num_processes,), verbose=False,
                           show_progress_bar=True)
    return out
