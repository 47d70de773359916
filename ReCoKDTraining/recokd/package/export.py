"""Build a model package from an nnU-Net / ReCo-KD training result folder.

The result folder is nnU-Net's trainer output (``.../<Trainer>__<plans>__<configuration>/``)
holding ``plans.json``, ``dataset.json`` and ``fold_<f>/<checkpoint>``. A ReCo-KD student's
checkpoint carries a ``"recokd"`` entry: its EMA weights are exported; the distillation
modules (adapters, context blocks, under ``recokd.kd_modules``) are not. A plain nnU-Net
checkpoint (a teacher) exports its ``network_weights``. Either way the weights must load
strictly into the network the plans describe, so the package is an ordinary nnU-Net network.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from recokd.errors import RecokdError
from recokd.evaluate.complexity import plans_complexity
from recokd.nnunet.checkpoint import load_checkpoint
from recokd.nnunet.network import build_network
from recokd.package.archive import write_package
from recokd.package.card import build_card
from recokd.package.model import ModelPackage
from recokd.package.terminology import default_label_infos

log = logging.getLogger(__name__)

WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


def export_package(
    result_folder: Path,
    out: Path,
    fold: int | str = 0,
    checkpoint: str = "checkpoint_final.pth",
    name: str | None = None,
    metrics: dict | None = None,
    extra_card: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the model of ``result_folder/fold_<fold>/<checkpoint>`` to the package file ``out``.

    ``metrics`` (e.g. Dice per class) and ``extra_card`` entries go into the model card.
    Refuses to replace an existing ``out`` unless ``overwrite``. Returns ``out``.
    """
    result_folder = Path(result_folder)
    plans = _read_json(result_folder / "plans.json")
    dataset_json = _read_json(result_folder / "dataset.json")
    checkpoint_dict = load_checkpoint(_checkpoint_path(result_folder, fold, checkpoint))
    configuration = _configuration(checkpoint_dict, result_folder, plans)

    network = build_network(plans, dataset_json, configuration)
    try:
        network.load_state_dict(network_weights(checkpoint_dict), strict=True)
    except RuntimeError as error:
        raise RecokdError(
            f"The weights in {checkpoint} do not fit the network of {result_folder / 'plans.json'} "
            f"({str(error).splitlines()[0]}). Export from the result folder the checkpoint was trained in."
        ) from error

    recokd = checkpoint_dict.get("recokd") or {}
    card_name = name or _default_name(dataset_json, plans, configuration, recokd.get("width"))
    card = build_card(
        name=card_name,
        description=_description(checkpoint_dict, result_folder, configuration, fold),
        configuration=configuration,
        plans=plans,
        dataset_json=dataset_json,
        fold=fold,
        checkpoint=checkpoint_dict,
        complexity=plans_complexity(plans, dataset_json, configuration),
        metrics=metrics,
        extra=extra_card,
    )
    package = ModelPackage(
        plans=plans,
        dataset_json=dataset_json,
        configuration=configuration,
        labels=default_label_infos(dataset_json),
        state_dict=network.state_dict(),
        card=card,
        mirror_axes=_mirror_axes(checkpoint_dict),
    )
    return write_package(package, Path(out), overwrite=overwrite)


def network_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The network's weights from a checkpoint: ReCo-KD EMA weights when present, else ``network_weights``.

    Keys lose a leading ``module.`` / ``_orig_mod.`` (DDP / compiled wrappers). Nothing under
    ``recokd.kd_modules`` is ever returned.
    """
    recokd = checkpoint.get("recokd") or {}
    weights = recokd.get("ema_weights") or checkpoint.get("network_weights")
    if not isinstance(weights, dict) or not weights:
        raise RecokdError("The checkpoint holds no network weights ('network_weights' or 'recokd.ema_weights').")
    source = "EMA weights" if recokd.get("ema_weights") else "network_weights"
    log.info("Exporting the checkpoint's %s", source)
    return {_strip_wrappers(key): value for key, value in weights.items()}


def _strip_wrappers(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def _checkpoint_path(result_folder: Path, fold: int | str, checkpoint: str) -> Path:
    path = result_folder / f"fold_{fold}" / checkpoint
    if not path.is_file():
        folds = sorted(p.name for p in result_folder.glob("fold_*") if p.is_dir())
        found = sorted(p.name for p in path.parent.glob("*.pth")) if path.parent.is_dir() else []
        raise RecokdError(
            f"No checkpoint {path}. Folds in {result_folder}: {folds or 'none'}; checkpoints in fold_{fold}: "
            f"{found or 'none'}. Pass --fold/--checkpoint, or train that fold first."
        )
    return path


def _configuration(checkpoint: dict, result_folder: Path, plans: dict) -> str:
    """The trained configuration: from the checkpoint's init args, else the folder name's last part."""
    configuration = (checkpoint.get("init_args") or {}).get("configuration") or result_folder.name.split("__")[-1]
    if configuration not in plans.get("configurations", {}):
        raise RecokdError(
            f"Configuration '{configuration}' of the checkpoint is not in {result_folder / 'plans.json'} "
            f"(it has {sorted(plans.get('configurations', {}))}); is this the right result folder?"
        )
    return configuration


def _mirror_axes(checkpoint: dict) -> tuple[int, ...] | None:
    axes = checkpoint.get("inference_allowed_mirroring_axes")
    return None if axes is None else tuple(int(a) for a in axes)


def _default_name(dataset_json: dict, plans: dict, configuration: str, width: object) -> str:
    dataset = plans.get("dataset_name") or dataset_json.get("name") or "model"
    role = f"student-w{str(width).replace('/', 'of')}" if width else "nnunet"
    return f"{dataset}-{role}-{configuration}"


def _description(checkpoint: dict, result_folder: Path, configuration: str, fold: int | str) -> str:
    recokd = checkpoint.get("recokd") or {}
    teacher = (recokd.get("teacher") or {}).get("folder")
    teacher_name = Path(str(teacher)).name if teacher else "unknown"
    what = (f"ReCo-KD student (width {recokd.get('width')}) of teacher {teacher_name}" if recokd
            else f"nnU-Net model ({checkpoint.get('trainer_name', 'unknown trainer')})")
    return f"{what}; {result_folder.parent.name}, {configuration}, fold {fold}."


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise RecokdError(f"{path} is missing; pass an nnU-Net result folder "
                          "(.../<Trainer>__<plans>__<configuration>).") from error
    except (OSError, ValueError) as error:
        raise RecokdError(f"{path} cannot be read as JSON ({error}).") from error
    if not isinstance(value, dict):
        raise RecokdError(f"{path} is not a JSON object.")
    return value
