"""Make Slicer know the category and type of a model's custom structures (labels with no code in
Slicer's terminologies), so that their segments show them like any other segment.

A custom label's segment carries the terminology entry of the ReCoKD context
(:data:`.labels.CUSTOM_TERMINOLOGY_CONTEXT`). Slicer shows a category and type only for a context
it has loaded, and loading a context file replaces the context of the same name. So the context
is kept as one file, ``ReCoKD-custom-structures.json`` in Slicer's user terminology folder (Slicer
loads every ``.json`` there at start-up, so scenes saved with such segments show them next time
too); each model's custom labels are merged into it, and the merged file is loaded again.

The file follows Slicer's segmentation category and type context format (dcmqi's
``segment-context-schema.json``): categories, each with its types, each type with its modifiers.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from .labels import CUSTOM_TERMINOLOGY_CONTEXT, Code, SegmentLabel

logger = logging.getLogger(__name__)

CONTEXT_FILE_NAME = "ReCoKD-custom-structures.json"
CONTEXT_SCHEMA = "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/schemas/segment-context-schema.json#"


def _code_fields(code: Code) -> dict:
    """The code as the context file spells it: as in the segments' entries (delimiters made spaces)."""
    scheme, value, meaning = code.entry().split("^")
    return {"CodingSchemeDesignator": scheme, "CodeValue": value, "CodeMeaning": meaning}


def _find_or_add(items: list, code: Code, **extra) -> dict:
    """The entry of ``items`` with ``code``'s scheme and value (its meaning updated), or a new one."""
    fields = _code_fields(code)
    for item in items:
        if (item.get("CodingSchemeDesignator"), item.get("CodeValue")) == (fields["CodingSchemeDesignator"],
                                                                           fields["CodeValue"]):
            item.update(fields)
            return item
    item = {**fields, **extra}
    items.append(item)
    return item


def custom_terminology_context(labels: Iterable[SegmentLabel], existing: Mapping | None = None) -> dict | None:
    """The ReCoKD context with every custom label's category, type (colour) and modifier added to ``existing``.

    ``existing`` is the context written before (other models' custom structures), kept as it was
    except where a label gives a code again (its meaning and colour are then this label's).
    ``None`` when no label is custom and nothing existed.
    """
    custom = [label for label in labels if label.custom]
    if not custom and existing is None:
        return None
    context = json.loads(json.dumps(existing)) if existing else {}  # a deep copy, plain JSON types
    context["SegmentationCategoryTypeContextName"] = CUSTOM_TERMINOLOGY_CONTEXT
    context["@schema"] = CONTEXT_SCHEMA
    categories = context.setdefault("SegmentationCodes", {}).setdefault("Category", [])
    for label in custom:
        category = _find_or_add(categories, label.category, showAnatomy=False)
        entry = _find_or_add(category.setdefault("Type", []), label.type)
        if label.modifier is None:
            entry["recommendedDisplayRGBValue"] = list(label.color)
        else:
            modifier = _find_or_add(entry.setdefault("Modifier", []), label.modifier)
            modifier["recommendedDisplayRGBValue"] = list(label.color)
    return context


def register_custom_terminology(labels: Iterable[SegmentLabel], terminologies_logic) -> Path | None:
    """Merge ``labels``' custom structures into ReCoKD's context file and load it into Slicer.

    ``terminologies_logic`` is Slicer's ``vtkSlicerTerminologiesModuleLogic``
    (``slicer.modules.terminologies.logic()``). Returns the context file, or ``None`` when no
    label is custom or no file was kept: without a user terminology folder (or when it cannot be
    written) the context is loaded from a temporary file, known for this session only. Never
    raises for a file problem: a segment without a category is better than no segmentation.
    """
    labels = list(labels)
    if not any(label.custom for label in labels):
        return None
    folder = terminologies_logic.GetUserContextsPath()
    path = Path(folder) / CONTEXT_FILE_NAME if folder else None
    context = custom_terminology_context(labels, _read_context(path) if path else None)
    try:
        if path is None:
            raise OSError("Slicer has no user terminology folder")
        _write_atomically(path, context)
    except OSError as error:
        logger.warning("Custom structures are known for this session only: %s", error)
        _load_once(context, terminologies_logic)
        return None
    if not terminologies_logic.LoadContextFromFile(str(path)):
        logger.warning("Slicer could not load the custom structures' terminology from %s", path)
    return path


def _read_context(path: Path) -> dict | None:
    """The context written before, or ``None`` when there is none or it is not ReCoKD's (it is then replaced)."""
    try:
        context = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logger.warning("Replacing the unreadable custom structures' terminology %s: %s", path, error)
        return None
    if not isinstance(context, dict) or context.get("SegmentationCategoryTypeContextName") != CUSTOM_TERMINOLOGY_CONTEXT:
        logger.warning("Replacing %s: it is not ReCoKD's custom structures' terminology", path)
        return None
    return context


def _write_atomically(path: Path, context: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(context, stream, indent=1)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _load_once(context: dict, terminologies_logic) -> None:
    handle, temporary = tempfile.mkstemp(prefix="recokd-terminology-", suffix=".json")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(context, stream)
        if not terminologies_logic.LoadContextFromFile(temporary):
            logger.warning("Slicer could not load the custom structures' terminology")
    finally:
        Path(temporary).unlink(missing_ok=True)
