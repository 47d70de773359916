"""A teacher given as an nnU-Net results folder or as a model package, and a package as a results folder.

``recokd distill`` takes its teacher as an nnU-Net results folder
(``<Trainer>__<Plans>__<configuration>/`` with ``plans.json``, ``dataset.json`` and
``fold_<f>/checkpoint_final.pth``). A package holds the same plans, dataset description and
weights, verified on loading (:func:`recokd.package.archive.load_package`), so it can be
written back into that layout: the checkpoint holds only tensors and plain data (it is read
back with ``weights_only=True``), names nnU-Net's stock trainer and carries no training log.

:func:`read_teacher` reads either form without writing anything, so everything a run needs to
check (labels, channels, plans) can be checked before the work directory is touched.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from recokd.errors import RecokdError
from recokd.inference.image_io import atomic_destination
from recokd.nnunet.checkpoint import save_atomically
from recokd.nnunet.teacher import channel_names, configuration_of_results_folder
from recokd.package.archive import PACKAGE_SUFFIX, load_package
from recokd.package.model import ModelPackage
from recokd.package.weights import update_with_state_dict

FOLD = 0
CHECKPOINT = "checkpoint_final.pth"
TRAINER = "nnUNetTrainer"
_DATASET_NAME = re.compile(r"Dataset\d{3}_\w+")
SOURCE_RECORD = "recokd_source.json"  # beside the checkpoint: the sha256 of the model it was written from
_FOLDER_PART = re.compile(r"(?!.*__)[A-Za-z0-9][A-Za-z0-9_.-]*")  # one part of <Trainer>__<Plans>__<configuration>


def teacher_folder_from_package(package: Path, results: Path) -> Path:
    """Write the package's model as ``results/<dataset>/nnUNetTrainer__<plans>__<configuration>``; return that folder.

    An existing folder written from the same model (same plans, dataset description and weights,
    recorded in ``fold_0/recokd_source.json``) is reused as it is: a second run writes nothing. One
    written from another model of the same names (a package updated since) is written again.
    """
    return teacher_folder_from_model(load_package(Path(package)), results)


def teacher_folder_from_model(model: ModelPackage, results: Path, model_sha256: str | None = None) -> Path:
    """:func:`teacher_folder_from_package` for a package already loaded (``model_sha256``: its
    :func:`model_digest`, when the caller has it already).

    The folder's names come from the package's plans, a file someone sent: a dataset name that
    is not nnU-Net's ``DatasetXXX_Name`` is replaced, and a plans or configuration name that could
    leave ``results`` or break the ``__``-separated folder name is refused.
    """
    dataset = str(model.plans.get("dataset_name"))
    dataset = dataset if _DATASET_NAME.fullmatch(dataset) else "Dataset999_Teacher"
    for what, name in (("plans", model.plans.get("plans_name")), ("configuration", model.configuration)):
        if not (isinstance(name, str) and _FOLDER_PART.fullmatch(name)):
            raise RecokdError(f"The package's {what} name {name!r} cannot name an nnU-Net results folder (letters, "
                              "digits, '.', '-' and single '_' only). Re-export the model.")
    folder = Path(results) / dataset / f"{TRAINER}__{model.plans['plans_name']}__{model.configuration}"
    checkpoint = folder / f"fold_{FOLD}" / CHECKPOINT
    source = checkpoint.with_name(SOURCE_RECORD)
    record = json.dumps({"model_sha256": model_sha256 or model_digest(model)})
    if checkpoint.is_file() and source.is_file() and source.read_text(encoding="utf-8") == record:
        return folder
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    for name, content in (("plans.json", model.plans), ("dataset.json", model.dataset_json)):
        # atomically: the ranks of a torchrun job write the same folder at once, and read it right after
        with atomic_destination(folder / name) as temporary:
            temporary.write_text(json.dumps(content, indent=2), encoding="utf-8")
    save_atomically({
        "network_weights": model.state_dict,
        "init_args": {"configuration": model.configuration, "fold": FOLD},
        "trainer_name": TRAINER,
        "inference_allowed_mirroring_axes": list(model.mirror_axes) if model.mirror_axes is not None else None,
        "source_package": model.name,
    }, checkpoint)
    with atomic_destination(source) as temporary:  # last: a folder without it is written again
        temporary.write_text(record, encoding="utf-8")
    return folder


def model_digest(model: ModelPackage) -> str:
    """sha256 of what the folder holds: plans, dataset description, configuration, mirror axes and weights."""
    digest = hashlib.sha256(json.dumps(
        [model.plans, model.dataset_json, model.configuration, model.mirror_axes], sort_keys=True, default=str).encode())
    update_with_state_dict(digest, model.state_dict)
    return digest.hexdigest()


@dataclass(frozen=True)
class TeacherSource:
    """A teacher as given: ``path`` is a results folder (``package`` None) or a ``*.recokd.zip`` (loaded, verified)."""

    path: Path
    plans: dict
    dataset_json: dict
    configuration: str
    package: ModelPackage | None = None

    @property
    def channels(self) -> int:
        return len(channel_names(self.dataset_json))

    def checkpoint(self, fold: int | str, name: str) -> tuple[int | str, str]:
        """``(fold, checkpoint name)`` to load: the caller's for a folder; a package's one set of weights is
        written out as fold 0's final checkpoint."""
        return (fold, name) if self.package is None else (FOLD, CHECKPOINT)

    def results_folder(self, work_dir: Path) -> Path:
        """The teacher's nnU-Net results folder; a package is written out once under ``work_dir/teachers``.

        Each model gets its own folder, named by its :func:`model_digest`: two packages whose plans
        and dataset names agree never share (and never reuse) each other's weights.
        """
        if self.package is None:
            return self.path
        digest = model_digest(self.package)
        return teacher_folder_from_model(self.package, Path(work_dir) / "teachers" / digest[:16], digest)


def read_teacher(path: Path) -> TeacherSource:
    """The teacher at ``path``: a results folder (``<Trainer>__<Plans>__<configuration>``) or a model package."""
    path = Path(path).resolve()
    if path.name.endswith(PACKAGE_SUFFIX):
        model = load_package(path)
        return TeacherSource(path, model.plans, model.dataset_json, model.configuration, model)
    configuration = configuration_of_results_folder(path)
    found = {name: path / name for name in ("plans.json", "dataset.json")}
    missing = [name for name, file in found.items() if not file.is_file()]
    if missing:
        raise RecokdError(f"{path} has no {' or '.join(missing)}: give the teacher's nnU-Net results folder "
                          f"(…/<Trainer>__<Plans>__<configuration>) or its model package (*{PACKAGE_SUFFIX}).")
    plans, dataset_json = (json.loads(file.read_text(encoding="utf-8")) for file in found.values())
    return TeacherSource(path, plans, dataset_json, configuration)
