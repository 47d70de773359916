"""In-memory form of a model package: what inference needs, nothing that executes code.

A package file (``*.recokd.zip``, see :mod:`recokd.package.archive`) holds:

=====================  =====================================================================
member                 content
=====================  =====================================================================
``weights.safetensors`` network weights (EMA of the student), plain tensors only
``plans.json``         nnU-Net v2 plans (the student's own plans identifier)
``dataset.json``       nnU-Net v2 dataset description (labels, channels, file ending)
``labels.json``        ``{"labels": [LabelInfo as dict, ...]}`` for every foreground label
``model_card.json``    provenance and metrics (teacher, width, params, FLOPs, ReCo-KD options)
``model_card.md``      the same for people
``inference.json``     ``{"configuration": "3d_fullres", "mirror_axes": [0, 1, 2]}``
``checksums.json``     ``{"member": "sha256 hex", ...}`` for every other member
=====================  =====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass(frozen=True)
class Terminology:
    """A coded concept (DICOM style): ``scheme`` is e.g. ``"SCT"`` (SNOMED CT) or ``"ReCoKD"`` (custom)."""

    scheme: str
    code: str
    meaning: str

    def to_dict(self) -> dict:
        return {"scheme": self.scheme, "code": self.code, "meaning": self.meaning}

    @classmethod
    def from_dict(cls, d: dict) -> Terminology:
        return cls(str(d["scheme"]), str(d["code"]), str(d["meaning"]))


@dataclass(frozen=True)
class LabelInfo:
    """One foreground label of a model: voxel value, display name, RGB colour and terminology.

    ``category``/``type``/``modifier`` follow DICOM's segmentation terminology triplet, the
    form Slicer's terminology tags use. ``custom`` is True when no standard code exists and
    the codes are the project's own (scheme ``"ReCoKD"``).
    """

    value: int
    name: str
    color: tuple[int, int, int]
    category: Terminology
    type: Terminology
    modifier: Terminology | None = None
    custom: bool = False

    def to_dict(self) -> dict:
        return {
            "value": self.value,
            "name": self.name,
            "color": list(self.color),
            "category": self.category.to_dict(),
            "type": self.type.to_dict(),
            "modifier": self.modifier.to_dict() if self.modifier else None,
            "custom": self.custom,
        }

    @classmethod
    def from_dict(cls, d: dict) -> LabelInfo:
        return cls(
            value=int(d["value"]),
            name=str(d["name"]),
            color=tuple(int(c) for c in d["color"]),
            category=Terminology.from_dict(d["category"]),
            type=Terminology.from_dict(d["type"]),
            modifier=Terminology.from_dict(d["modifier"]) if d.get("modifier") else None,
            custom=bool(d.get("custom", False)),
        )


@dataclass
class ModelPackage:
    """A loaded, verified package. ``state_dict`` loads strictly into the network its plans build."""

    plans: dict
    dataset_json: dict
    configuration: str
    labels: list[LabelInfo]
    state_dict: dict[str, torch.Tensor]
    card: dict = field(default_factory=dict)
    mirror_axes: tuple[int, ...] | None = None
    source: Path | None = None

    @property
    def name(self) -> str:
        if self.card.get("name"):
            return str(self.card["name"])
        return self.source.name.split(".", 1)[0] if self.source else "model"
