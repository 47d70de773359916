"""Where a run keeps its files: nnU-Net's three folders, by default under one work directory.

nnU-Net v2 reads ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` from the
environment each time it needs them (``nnunetv2.paths`` resolves them lazily), so exporting
them at run time is enough. A user who already has nnU-Net set up keeps their folders:
variables already exported win over the work directory's defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORK_DIR = Path(os.environ.get("RECOKD_WORK_DIR", "recokd_work"))
_NNUNET_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


@dataclass(frozen=True)
class Workspace:
    """nnU-Net's folder triple (raw, preprocessed, results) plus a folder for ReCoKD's reports."""

    root: Path
    raw: Path
    preprocessed: Path
    results: Path

    @classmethod
    def under(cls, root: Path, respect_environment: bool = True) -> Workspace:
        """Folders ``root/nnUNet_raw`` etc., or the exported nnU-Net variables when set."""
        root = Path(root).resolve()
        folders = []
        for name in _NNUNET_VARS:
            exported = os.environ.get(name) if respect_environment else None
            folders.append(Path(exported).resolve() if exported else root / name)
        return cls(root, *folders)

    def activate(self) -> Workspace:
        """Create the folders and export them for nnU-Net; returns ``self``."""
        for name, path in zip(_NNUNET_VARS, (self.raw, self.preprocessed, self.results)):
            path.mkdir(parents=True, exist_ok=True)
            os.environ[name] = str(path)
        return self
