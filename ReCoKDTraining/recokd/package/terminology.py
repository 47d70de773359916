"""Default display names, colours and terminology codes for a dataset's labels.

A label name from ``dataset.json`` (``"liver"``, ``"kidney_left"``, ``"Right adrenal gland"``)
is split into words; ``left``/``right`` and ``anterior``/``posterior`` become a SNOMED CT
modifier, the rest is looked up in :data:`KNOWN_STRUCTURES`. Codes and colours there are the
ones 3D Slicer's ``SegmentationCategoryTypeModifier-SlicerGeneralAnatomy`` terminology uses
(checked against Slicer's file), so segments open in Slicer with its usual names and colours.

A label that is *only* a modifier takes its structure from the dataset's name: MSD
Hippocampus (``"name": "Hippocampus"``) labels ``Anterior`` and ``Posterior`` become
hippocampus (SCT 5366008) with the anterior/posterior modifier.

Anything else gets a clearly marked custom code (scheme ``"ReCoKD"``, ``custom=True``) and a
colour from :data:`CUSTOM_PALETTE`. Colours are kept distinct within one model: a colour
already taken (left and right kidney share Slicer's kidney colour) is lightened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from recokd.errors import RecokdError
from recokd.package.model import LabelInfo, Terminology

ANATOMICAL_STRUCTURE = Terminology("SCT", "123037004", "Anatomical Structure")
TISSUE = Terminology("SCT", "85756007", "Tissue")
CUSTOM_CATEGORY = Terminology("ReCoKD", "segment", "Segment")

MODIFIERS: dict[str, Terminology] = {
    "left": Terminology("SCT", "7771000", "Left"),
    "right": Terminology("SCT", "24028007", "Right"),
    "anterior": Terminology("SCT", "255549009", "Anterior"),
    "posterior": Terminology("SCT", "255551008", "Posterior"),
}


@dataclass(frozen=True)
class Structure:
    """A coded structure: its terminology category and type, and the display colour."""

    category: Terminology
    type: Terminology
    color: tuple[int, int, int]


def _anatomy(code: str, meaning: str, color: tuple[int, int, int]) -> Structure:
    return Structure(ANATOMICAL_STRUCTURE, Terminology("SCT", code, meaning), color)


def _tissue(code: str, meaning: str, color: tuple[int, int, int]) -> Structure:
    return Structure(TISSUE, Terminology("SCT", code, meaning), color)


# Keys are lower-case words joined by single spaces (see ``_words``).
KNOWN_STRUCTURES: dict[str, Structure] = {
    "liver": _anatomy("10200004", "Liver", (221, 130, 101)),
    "kidney": _anatomy("64033007", "Kidney", (185, 102, 83)),
    "adrenal gland": _anatomy("23451007", "Adrenal gland", (249, 186, 150)),
    "spleen": _anatomy("78961009", "Spleen", (157, 108, 162)),
    "pancreas": _anatomy("15776009", "Pancreas", (249, 180, 111)),
    "gallbladder": _anatomy("28231008", "Gallbladder", (139, 150, 98)),
    "stomach": _anatomy("69695003", "Stomach", (216, 132, 105)),
    "esophagus": _anatomy("32849002", "Esophagus", (211, 171, 143)),
    "duodenum": _anatomy("38848004", "Duodenum", (255, 253, 229)),
    "colon": _anatomy("71854001", "Colon", (204, 168, 143)),
    "small intestine": _anatomy("30315005", "Small Intestine", (205, 167, 142)),
    "small bowel": _anatomy("30315005", "Small Intestine", (205, 167, 142)),
    "urinary bladder": _anatomy("89837001", "Bladder", (222, 154, 132)),
    "bladder": _anatomy("89837001", "Bladder", (222, 154, 132)),
    "prostate": _anatomy("41216001", "Prostate", (230, 158, 140)),
    "aorta": _anatomy("15825003", "Aorta", (224, 97, 76)),
    "heart": _anatomy("80891009", "Heart", (206, 110, 84)),
    "lung": _anatomy("39607008", "Lung", (197, 165, 145)),
    "trachea": _anatomy("44567001", "Trachea", (182, 228, 255)),
    "brain": _anatomy("12738006", "Brain", (250, 250, 225)),
    "spinal cord": _anatomy("2748008", "Spinal cord", (244, 214, 49)),
    # Not in Slicer's general anatomy list (standard SNOMED CT codes; colours chosen here).
    "hippocampus": _anatomy("5366008", "Hippocampus", (220, 216, 20)),
    "vessel": _anatomy("59820001", "Blood vessel", (216, 101, 79)),
    "blood vessel": _anatomy("59820001", "Blood vessel", (216, 101, 79)),
    # Slicer files these under the "Tissue" category.
    "artery": _tissue("51114001", "Artery", (216, 101, 79)),
    "vein": _tissue("29092000", "Vein", (0, 151, 206)),
    "muscle": _tissue("71616004", "Muscle", (192, 104, 88)),
    "bone": _tissue("272673000", "Bone", (241, 214, 145)),
    "fat": _tissue("248300009", "Body fat", (230, 220, 70)),
}

CUSTOM_PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
)


def foreground_labels(dataset_json: dict) -> list[tuple[int, str]]:
    """``(value in the predicted label map, name)`` of every foreground label, in label order.

    Plain datasets map each name to its integer; region-based ones (label values are lists)
    write ``regions_class_order[i]`` for the i-th region, as nnU-Net's label manager does.
    ``background`` (value 0) and nnU-Net's ``ignore`` label are never predicted.
    """
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict):
        raise RecokdError("dataset.json has no 'labels' object; it is not an nnU-Net v2 dataset description.")
    names = [name for name, value in labels.items() if name != "ignore" and value not in (0, [0])]
    if any(isinstance(labels[name], list) for name in names):
        order = dataset_json.get("regions_class_order")
        if not isinstance(order, list) or len(order) != len(names):
            raise RecokdError("dataset.json uses regions but 'regions_class_order' does not list one value per region.")
        return [(int(value), name) for value, name in zip(order, names)]
    return [(int(labels[name]), name) for name in names]


def default_label_infos(dataset_json: dict) -> list[LabelInfo]:
    """A :class:`LabelInfo` for every foreground label of ``dataset_json`` (see module docstring)."""
    context = _structure_in(_words(str(dataset_json.get("name", ""))))
    infos: list[LabelInfo] = []
    used: set[tuple[int, int, int]] = set()
    for value, name in foreground_labels(dataset_json):
        info = _label_info(value, name, context, used)
        used.add(info.color)
        infos.append(info)
    return infos


def _label_info(value: int, name: str, context: Structure | None, used: set[tuple[int, int, int]]) -> LabelInfo:
    words = _words(name)
    modifiers = [MODIFIERS[w] for w in words if w in MODIFIERS]
    rest = " ".join(w for w in words if w not in MODIFIERS)
    structure = KNOWN_STRUCTURES.get(rest) if rest else context
    if structure is None or len(modifiers) > 1:
        color = next((c for c in CUSTOM_PALETTE if c not in used), CUSTOM_PALETTE[value % len(CUSTOM_PALETTE)])
        slug = "-".join(words) or f"label-{value}"
        return LabelInfo(value, name, _distinct(color, used), CUSTOM_CATEGORY,
                         Terminology("ReCoKD", slug, name), custom=True)
    return LabelInfo(value, name, _distinct(structure.color, used), structure.category, structure.type,
                     modifier=modifiers[0] if modifiers else None)


def _words(name: str) -> list[str]:
    """``"Kidney_Left"`` / ``"leftKidney"`` / ``"left-kidney"`` -> lower-case words."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    return [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]


def _structure_in(words: list[str]) -> Structure | None:
    """The known structure named by any run of consecutive words (longest first), if any."""
    for length in range(len(words), 0, -1):
        for start in range(len(words) - length + 1):
            structure = KNOWN_STRUCTURES.get(" ".join(words[start:start + length]))
            if structure:
                return structure
    return None


def _distinct(color: tuple[int, int, int], used: set[tuple[int, int, int]]) -> tuple[int, int, int]:
    while color in used and color != (255, 255, 255):
        color = _lighten(color)
    return color


def _lighten(color: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = (c + max(1, (255 - c) * 35 // 100) if c < 255 else 255 for c in color)
    return (r, g, b)
