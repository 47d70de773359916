"""Type checks for the JSON members of a model package.

Every value read from a package came from a file someone sent: these functions check the
shape of each member before anything uses it, and turn the parsed data into the
:mod:`recokd.package.model` types. Each failure is a :class:`RecokdError` naming the member.
"""

from __future__ import annotations

import re

from recokd.errors import RecokdError
from recokd.package.model import LabelInfo, Terminology
from recokd.package.terminology import foreground_labels

REEXPORT = "The package is damaged or was not made by `recokd export`; re-export the model."
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_plans(plans: object) -> dict:
    """``plans.json``: an object whose ``configurations`` is a non-empty object of objects."""
    configurations = _object(plans, "plans.json").get("configurations")
    if not (isinstance(configurations, dict) and configurations
            and all(isinstance(c, dict) for c in configurations.values())):
        raise RecokdError(f"plans.json has no 'configurations' object. {REEXPORT}")
    return plans


def check_dataset_json(dataset_json: object) -> dict:
    """``dataset.json``: ``channel_names`` and ``labels`` (name -> integer or list of integers)."""
    dataset_json = _object(dataset_json, "dataset.json")
    channels, labels = dataset_json.get("channel_names"), dataset_json.get("labels")
    if not (isinstance(channels, dict) and channels):
        raise RecokdError(f"dataset.json has no 'channel_names' object. {REEXPORT}")
    if not (isinstance(labels, dict) and labels and all(
            _is_int(v) or (isinstance(v, list) and v and all(_is_int(i) for i in v)) for v in labels.values())):
        raise RecokdError(f"dataset.json 'labels' must map names to integers (or lists of integers). {REEXPORT}")
    return dataset_json


def parse_inference(inference: object, plans: dict) -> tuple[str, tuple[int, ...] | None]:
    """``inference.json`` -> ``(configuration, mirror_axes)``; the configuration must be in the plans."""
    inference = _object(inference, "inference.json")
    configuration, axes = inference.get("configuration"), inference.get("mirror_axes")
    if not isinstance(configuration, str) or configuration not in plans["configurations"]:
        raise RecokdError(f"inference.json names configuration {configuration!r}, which plans.json does not have. "
                          f"{REEXPORT}")
    if axes is not None and not (isinstance(axes, list) and all(_is_int(a) and 0 <= a <= 2 for a in axes)):
        raise RecokdError(f"inference.json 'mirror_axes' must be null or a list of axes 0..2. {REEXPORT}")
    return configuration, None if axes is None else tuple(axes)


def parse_labels(labels_json: object) -> list[LabelInfo]:
    """``labels.json`` (``{"labels": [...]}``) -> :class:`LabelInfo` list, every field type-checked."""
    entries = _object(labels_json, "labels.json").get("labels")
    if not isinstance(entries, list):
        raise RecokdError(f"labels.json has no 'labels' list. {REEXPORT}")
    return [_label(entry, i) for i, entry in enumerate(entries)]


def check_labels_match(labels: list[LabelInfo], dataset_json: dict) -> None:
    """labels.json must describe exactly the foreground labels of dataset.json (values and names)."""
    described = sorted((label.value, label.name) for label in labels)
    predicted = sorted(foreground_labels(dataset_json))
    if described != predicted:
        raise RecokdError(
            f"labels.json describes labels {described} but dataset.json defines {predicted}; the segment names "
            f"would be wrong. {REEXPORT}"
        )


def parse_checksums(checksums: object, members: set[str]) -> dict[str, str]:
    """``checksums.json``: one lower-case sha256 hex digest for each of ``members``, nothing else."""
    checksums = _object(checksums, "checksums.json")
    if set(checksums) != members:
        raise RecokdError(f"checksums.json lists {sorted(checksums)} but the package holds {sorted(members)}. "
                          f"{REEXPORT}")
    for name, digest in checksums.items():
        if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
            raise RecokdError(f"checksums.json entry for '{name}' is not a sha256 hex digest. {REEXPORT}")
    return checksums


def check_card(card: object) -> dict:
    """``model_card.json``: an object; ``name`` and ``description``, when present, are text."""
    card = _object(card, "model_card.json")
    for key in ("name", "description"):
        if key in card and not isinstance(card[key], str):
            raise RecokdError(f"model_card.json '{key}' must be text. {REEXPORT}")
    return card


def _label(entry: object, index: int) -> LabelInfo:
    where = f"labels.json entry {index}"
    entry = _object(entry, where)
    value, name, color = entry.get("value"), entry.get("name"), entry.get("color")
    if not (_is_int(value) and value > 0):
        raise RecokdError(f"{where}: 'value' must be a positive integer. {REEXPORT}")
    if not (isinstance(name, str) and name):
        raise RecokdError(f"{where}: 'name' must be non-empty text. {REEXPORT}")
    if not (isinstance(color, list) and len(color) == 3 and all(_is_int(c) and 0 <= c <= 255 for c in color)):
        raise RecokdError(f"{where}: 'color' must be three integers 0..255. {REEXPORT}")
    if not isinstance(entry.get("custom", False), bool):
        raise RecokdError(f"{where}: 'custom' must be true or false. {REEXPORT}")
    modifier = entry.get("modifier")
    return LabelInfo(
        value=value,
        name=name,
        color=(color[0], color[1], color[2]),
        category=_terminology(entry.get("category"), f"{where} 'category'"),
        type=_terminology(entry.get("type"), f"{where} 'type'"),
        modifier=None if modifier is None else _terminology(modifier, f"{where} 'modifier'"),
        custom=entry.get("custom", False),
    )


def _terminology(value: object, where: str) -> Terminology:
    value = _object(value, where)
    fields = [value.get(key) for key in ("scheme", "code", "meaning")]
    if not all(isinstance(f, str) and f for f in fields):
        raise RecokdError(f"{where} needs text 'scheme', 'code' and 'meaning'. {REEXPORT}")
    return Terminology(*fields)


def _object(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise RecokdError(f"{where} must be a JSON object. {REEXPORT}")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
