"""A model's labels as the module receives them from ``recokd`` (LabelInfo dicts), and their
Slicer terminology entry strings.

A LabelInfo dict (see ``recokd.package.model.LabelInfo.to_dict``) is::

    {"value": 1, "name": "Liver", "color": [221, 130, 101],
     "category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
     "type": {"scheme": "SCT", "code": "10200004", "meaning": "Liver"},
     "modifier": null, "custom": false}

Slicer stores a segment's terminology as one string (the ``TerminologyEntry`` segment tag)::

    context~category~type~typeModifier~anatomicContext~anatomicRegion~anatomicRegionModifier

where each code is ``scheme^code^meaning`` and an absent code is ``^^``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
CUSTOM_TERMINOLOGY_CONTEXT = "Segmentation category and type - ReCoKD"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
EMPTY_CODE = "^^"
# Characters that delimit the terminology entry string; they cannot appear inside a field.
_RESERVED = str.maketrans({"~": " ", "^": " ", "|": " "})


@dataclass(frozen=True)
class Code:
    """A coded concept: coding scheme designator (e.g. ``SCT``), code value and code meaning."""

    scheme: str
    code: str
    meaning: str

    @classmethod
    def from_dict(cls, data: Mapping) -> Code:
        return cls(str(data["scheme"]), str(data["code"]), str(data["meaning"]))

    def entry(self) -> str:
        """``scheme^code^meaning`` with the delimiter characters replaced by spaces."""
        return "^".join(part.translate(_RESERVED) for part in (self.scheme, self.code, self.meaning))


@dataclass(frozen=True)
class SegmentLabel:
    """One foreground label of a model: voxel value, name, RGB colour (0-255) and terminology."""

    value: int
    name: str
    color: tuple[int, int, int]
    category: Code
    type: Code
    modifier: Code | None = None
    custom: bool = False

    @classmethod
    def from_dict(cls, data: Mapping) -> SegmentLabel:
        color = tuple(int(c) for c in data["color"])
        if len(color) != 3 or not all(0 <= c <= 255 for c in color):
            raise ValueError(f"label {data.get('name')!r}: colour must be three values 0-255, got {data['color']}")
        return cls(
            value=int(data["value"]),
            name=str(data["name"]),
            color=color,
            category=Code.from_dict(data["category"]),
            type=Code.from_dict(data["type"]),
            modifier=Code.from_dict(data["modifier"]) if data.get("modifier") else None,
            custom=bool(data.get("custom", False)),
        )

    @property
    def color_float(self) -> tuple[float, float, float]:
        """The colour as Slicer's segments store it (0-1)."""
        return tuple(c / 255.0 for c in self.color)

    def terminology_entry(self) -> str:
        """This label's Slicer terminology entry string (segment tag ``TerminologyEntry``)."""
        context = CUSTOM_TERMINOLOGY_CONTEXT if self.custom else TERMINOLOGY_CONTEXT
        modifier = self.modifier.entry() if self.modifier else EMPTY_CODE
        return "~".join(
            [context, self.category.entry(), self.type.entry(), modifier, ANATOMIC_CONTEXT, EMPTY_CODE, EMPTY_CODE]
        )


def labels_from_dicts(items: Iterable[Mapping]) -> list[SegmentLabel]:
    """Parse LabelInfo dicts; values must be unique and in 1..65535 (0 is background)."""
    labels = [SegmentLabel.from_dict(item) for item in items]
    values = [label.value for label in labels]
    if len(set(values)) != len(values):
        raise ValueError(f"label values are not unique: {values}")
    if any(not 0 < value <= 65535 for value in values):
        raise ValueError(f"label values must be in 1..65535, got {values}")
    return labels
