"""The model card: where a packaged model comes from, how big it is and how good, as JSON and Markdown.

``model_card.json`` is for programs (the Slicer module shows ``name`` and ``description``),
``model_card.md`` renders the same facts for people. Only folder *names* are recorded, never
absolute local paths, since a package is meant to be passed around.
"""

from __future__ import annotations

from datetime import datetime, timezone
from importlib import metadata
from pathlib import PurePath

from recokd import __version__
from recokd.evaluate.complexity import Complexity
from recokd.package.model import LabelInfo

CODE_LICENCE = "Apache-2.0"


def build_card(
    *,
    name: str,
    description: str,
    configuration: str,
    plans: dict,
    dataset_json: dict,
    fold: int | str,
    checkpoint: dict,
    complexity: Complexity,
    metrics: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """The card of a model exported from an nnU-Net/ReCoKD ``checkpoint`` (see :mod:`recokd.package.export`).

    ``extra`` entries are added last and may replace any computed entry.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    recokd = checkpoint.get("recokd") or {}
    architecture = PlansManager(plans).get_configuration(configuration).network_arch_class_name
    card = {
        "name": name,
        "description": description,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recokd_version": __version__,
        "nnunetv2_version": _version("nnunetv2"),
        "torch_version": _version("torch"),
        "trainer": checkpoint.get("trainer_name"),
        "plans_identifier": plans.get("plans_name"),
        "configuration": configuration,
        "architecture": architecture.rsplit(".", 1)[-1],
        "width": recokd.get("width"),
        "parameters": complexity.parameters,
        "flops_per_patch": complexity.flops,
        "patch_size": list(complexity.input_shape[2:]),
        "teacher": _without_local_paths(recokd.get("teacher")),
        "training_data": {
            "dataset": plans.get("dataset_name") or dataset_json.get("name"),
            "num_training": dataset_json.get("numTraining"),
            "fold": fold,
            "epochs": checkpoint.get("current_epoch"),
        },
        "recokd_options": recokd.get("options"),
        "metrics": dict(metrics or {}),
        "licence": {"code": CODE_LICENCE, "training_data": dataset_json.get("licence")},
    }
    card.update(extra or {})
    return card


def card_markdown(card: dict, labels: list[LabelInfo]) -> str:
    """``model_card.md``: the card's facts as a short Markdown page."""
    data = card.get("training_data") or {}
    licence = card.get("licence") or {}
    teacher = card.get("teacher")
    rows = [
        ("Created", card.get("created")),
        ("Configuration", f"{card.get('configuration')} ({card.get('architecture')}, plans {card.get('plans_identifier')})"),
        ("Student width", card.get("width") or "full (not a distilled student)"),
        ("Parameters", _count(card.get("parameters"))),
        ("FLOPs per patch", f"{_count(card.get('flops_per_patch'))} (patch {_shape(card.get('patch_size'))})"),
        ("Teacher", ", ".join(f"{k}: {v}" for k, v in teacher.items()) if isinstance(teacher, dict) else "none"),
        ("Training data", f"{data.get('dataset')}, {data.get('num_training')} training cases, fold {data.get('fold')}, "
                          f"{data.get('epochs')} epochs"),
        ("Software", f"recokd {card.get('recokd_version')}, nnU-Net {card.get('nnunetv2_version')}, "
                     f"PyTorch {card.get('torch_version')}"),
        ("Licence", f"code {licence.get('code')}; training data {licence.get('training_data') or 'not stated'}"),
    ]
    lines = [f"# {_cell(card.get('name'))}", "", _cell(card.get("description")), "", "| | |", "|---|---|"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in rows]
    lines += ["", "## Labels", "", "| Value | Name | Colour | Terminology |", "|---|---|---|---|"]
    for label in labels:
        term = f"{label.type.meaning} ({label.type.scheme} {label.type.code})"
        if label.modifier:
            term += f", {label.modifier.meaning} ({label.modifier.scheme} {label.modifier.code})"
        if label.custom:
            term += ", custom code"
        colour = "#{:02x}{:02x}{:02x}".format(*label.color)
        lines.append(f"| {label.value} | {_cell(label.name)} | {colour} | {_cell(term)} |")
    for title, key in (("ReCo-KD options", "recokd_options"), ("Metrics", "metrics")):
        values = card.get(key) or {}
        lines += ["", f"## {title}", ""]
        lines += [f"- {_cell(k)}: {_cell(v)}" for k, v in values.items()] if values else ["None recorded."]
    return "\n".join(lines) + "\n"


def _without_local_paths(teacher: dict | None) -> dict | None:
    """The teacher entry with its ``folder`` cut to the folder's name."""
    if not isinstance(teacher, dict):
        return None
    folder = teacher.get("folder")
    return {**teacher, "folder": PurePath(str(folder).replace("\\", "/")).name} if folder else dict(teacher)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _shape(value: object) -> str:
    return "x".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _cell(value: object) -> str:
    """Text safe inside a Markdown table cell or list item."""
    return str(value).replace("|", "\\|").replace("\n", " ")
