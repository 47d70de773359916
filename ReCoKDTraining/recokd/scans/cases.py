"""Which scans (and which labels) make up the cases of an images folder.

An images folder holds image files (NIfTI, NRRD, MHA) and DICOM series folders, one case
each, named after the file without its suffix or after the folder. Files named in nnU-Net's
raw format (``<case>_0000.nii.gz``, ``<case>_0001.nii.gz`` ...) are grouped into one case per
``<case>`` when that gives every case exactly the teacher's channels, numbered from 0000; so
an nnU-Net ``imagesTr`` folder is read as nnU-Net reads it, while patients numbered
``scan_0000``, ``scan_0001`` ... stay separate cases for a one-channel teacher. A labels folder
holds one label file per labeled case, named after the case.

Everything here looks at names only; :mod:`recokd.scans.checks` reads the files.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from recokd.errors import RecokdError
from recokd.inference.image_io import IMAGE_SUFFIXES, is_dicom_folder, matching_suffix, strip_suffix

log = logging.getLogger(__name__)

_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class ScanCase:
    """One training case: its name, its scan (one path per channel file, or one 4D file or DICOM
    series folder) and its label file, if any."""

    name: str
    images: tuple[Path, ...]
    label: Path | None = None


def find_cases(images: Path, labels: Path | None, channels: int) -> list[ScanCase]:
    """The cases of ``images`` (sorted by name), each with its label from ``labels`` when there is one.

    ``channels`` is the teacher's input channel count (it decides whether nnU-Net's channel
    file names are grouped). Raises :class:`RecokdError` for a missing folder, a folder with
    no scan, two scans (or two label files) with one case name, and a labels folder none of
    whose files names a case; label files for cases that are not there are only logged.
    """
    images = _folder(images, "--images")
    files = sorted(p for p in images.iterdir() if p.is_file() and _is_image(p))
    series = sorted(p for p in images.iterdir() if p.is_dir() and is_dicom_folder(p))
    if not files and not series:
        raise RecokdError(f"{images} holds no scan: no images ending in {', '.join(IMAGE_SUFFIXES)} and no DICOM "
                          "series folders.")
    entries = _channel_groups(files, channels) or [(strip_suffix(p, IMAGE_SUFFIXES), (p,)) for p in files]
    entries += [(folder.name, (folder,)) for folder in series]
    _refuse_duplicates([(name, paths[0]) for name, paths in entries], "scans")

    label_files = _label_files(labels) if labels is not None else {}
    names = {name for name, _ in entries}
    unmatched = sorted(set(label_files) - names)
    if label_files and len(unmatched) == len(label_files):
        raise RecokdError(f"None of the {len(label_files)} label files in {labels} is named after a scan in {images} "
                          f"(e.g. {unmatched[0]} vs {sorted(names)[0]}): name each label file after its case.")
    if unmatched:
        log.warning("%d label file(s) in %s have no scan and are not used: %s", len(unmatched), labels,
                    ", ".join(unmatched[:5]))
    return sorted((ScanCase(name, paths, label_files.get(name)) for name, paths in entries), key=lambda c: c.name)


def _folder(path: Path, option: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise RecokdError(f"{option} {path} is not a folder.")
    return path.resolve()


def _is_image(path: Path) -> bool:
    return matching_suffix(path, IMAGE_SUFFIXES) is not None and not path.name.lower().endswith(".seg.nrrd")


def _channel_groups(files: list[Path], channels: int) -> list[tuple[str, tuple[Path, ...]]] | None:
    """``[(case, channel files in channel order)]`` when every file is ``<case>_<XXXX>`` and every case
    has channels ``0000`` .. ``channels - 1``; else None (each file is a case of its own)."""
    groups: dict[str, dict[int, Path]] = defaultdict(dict)
    for path in files:
        match = _CHANNEL_FILE.match(strip_suffix(path, IMAGE_SUFFIXES))
        if match is None:
            return None
        groups[match["case"]].setdefault(int(match["channel"]), path)
    if not groups or any(sorted(group) != list(range(channels)) for group in groups.values()):
        return None
    _refuse_duplicates([(strip_suffix(p, IMAGE_SUFFIXES), p) for p in files], "scans")
    return [(case, tuple(group[c] for c in range(channels))) for case, group in sorted(groups.items())]


def _label_files(labels: Path) -> dict[str, Path]:
    labels = _folder(labels, "--labels")
    files = sorted(p for p in labels.iterdir() if p.is_file() and _is_image(p))
    if not files:
        raise RecokdError(f"--labels {labels} holds no label files ending in {', '.join(IMAGE_SUFFIXES)} (Slicer "
                          "segmentations, .seg.nrrd, are not read: export them as label maps).")
    named = [(strip_suffix(p, IMAGE_SUFFIXES), p) for p in files]
    _refuse_duplicates(named, "label files")
    return dict(named)


def _refuse_duplicates(named: list[tuple[str, Path]], what: str) -> None:
    """Two paths giving one case name (``a.nii.gz`` and ``a.nrrd``) would make one case out of two files."""
    seen: dict[str, Path] = {}
    for name, path in named:
        if name in seen:
            raise RecokdError(f"Two {what} have the case name '{name}': {seen[name].name} and {path.name}. "
                              "Rename or remove one; every case needs its own name.")
        seen[name] = path
