"""A model package as an nnU-Net results folder, so that a shipped or downloaded teacher can teach.

``recokd distill`` takes its teacher as an nnU-Net results folder
(``<Trainer>__<Plans>__<configuration>/`` with ``plans.json``, ``dataset.json`` and
``fold_<f>/checkpoint_final.pth``). A package holds the same plans, dataset description and
weights, verified on loading (:func:`recokd.package.archive.load_package`), so it can be
written back into that layout: the checkpoint holds only tensors and plain data (it is read
back with ``weights_only=True``), names nnU-Net's stock trainer and carries no training log.
"""

from __future__ import annotations

import json
from pathlib import Path

from recokd.nnunet.checkpoint import save_atomically
from recokd.package.archive import load_package

FOLD = 0
TRAINER = "nnUNetTrainer"


def teacher_folder_from_package(package: Path, results: Path) -> Path:
    """Write the package's model as ``results/<dataset>/nnUNetTrainer__<plans>__<configuration>``; return that folder.

    An existing folder with a final checkpoint is reused as it is (a second run writes nothing).
    """
    model = load_package(Path(package))
    dataset = model.plans.get("dataset_name") or "Dataset999_Teacher"
    folder = Path(results) / dataset / f"{TRAINER}__{model.plans['plans_name']}__{model.configuration}"
    checkpoint = folder / f"fold_{FOLD}" / "checkpoint_final.pth"
    if checkpoint.is_file():
        return folder
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(model.plans, indent=2), encoding="utf-8")
    (folder / "dataset.json").write_text(json.dumps(model.dataset_json, indent=2), encoding="utf-8")
    save_atomically({
        "network_weights": model.state_dict,
        "init_args": {"configuration": model.configuration, "fold": FOLD},
        "trainer_name": TRAINER,
        "inference_allowed_mirroring_axes": list(model.mirror_axes) if model.mirror_axes is not None else None,
        "source_package": model.name,
    }, checkpoint)
    return folder
