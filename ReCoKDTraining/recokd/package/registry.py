"""The installed-models folder: one ``<name>.recokd.zip`` per model; and the models ReCoKD ships.

The folder is ``$RECOKD_MODELS_DIR`` when set, else the platform's per-user data folder
(:func:`default_models_dir`). Bundled models (:func:`bundled_models_dir`: the repository's
``Resources/Models``, or ``$RECOKD_BUNDLED_MODELS_DIR`` where an installation puts them) are
listed and found like installed ones, read-only, and an installed model of the same name wins. A model's name is its file name without the suffix, derived
from the package's card name and sanitised to ``[A-Za-z0-9._-]``. Installing validates the
copy that will be installed (with :func:`~recokd.package.archive.load_package`) before it
is renamed into place, so the folder never holds a half-copied or refused package; listing
reads only the small JSON members and reports a broken package with its reason.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from recokd.errors import RecokdError
from recokd.package.archive import PACKAGE_SUFFIX, load_package, read_package_info
from recokd.package.model import LabelInfo

log = logging.getLogger(__name__)

MODELS_DIR_VARIABLE = "RECOKD_MODELS_DIR"
BUNDLED_DIR_VARIABLE = "RECOKD_BUNDLED_MODELS_DIR"
SOURCE_BUNDLED_DIR = Path(__file__).resolve().parents[3] / "Resources" / "Models"  # in a source checkout
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


@dataclass(frozen=True)
class InstalledModel:
    """One package in the models folder; ``error`` says why it is unusable, ``None`` when it is fine."""

    name: str
    path: Path
    labels: list[LabelInfo] = field(default_factory=list)
    description: str = ""
    error: str | None = None
    bundled: bool = False  # shipped with ReCoKD (read-only), not installed by the user

    def to_dict(self) -> dict:
        """The form ``recokd models list --json`` prints (the Slicer module parses exactly this)."""
        return {
            "name": self.name,
            "path": str(self.path),
            "labels": [label.to_dict() for label in self.labels],
            "description": self.description,
            "bundled": self.bundled,
        }


def default_models_dir() -> Path:
    """``$RECOKD_MODELS_DIR``, else the per-user data folder of this platform plus ``recokd/models``."""
    override = os.environ.get(MODELS_DIR_VARIABLE)
    if override:
        return Path(override).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "recokd" / "models"


def bundled_models_dir() -> Path | None:
    """The folder of models shipped with ReCoKD: ``$RECOKD_BUNDLED_MODELS_DIR`` (empty: none), else the checkout's."""
    override = os.environ.get(BUNDLED_DIR_VARIABLE)
    if override is None:
        folder = SOURCE_BUNDLED_DIR
    elif override:
        folder = Path(override).expanduser()
    else:
        return None
    return folder if folder.is_dir() else None


def model_file_name(name: str) -> str:
    """A safe file name for a model called ``name``: ``[A-Za-z0-9._-]`` only, plus the package suffix."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:100] or "model"
    if safe.split(".")[0].lower() in _WINDOWS_RESERVED:
        safe = f"{safe}_model"
    return safe + PACKAGE_SUFFIX


def list_models(folder: Path | None = None) -> list[InstalledModel]:
    """Every package in ``folder`` and the bundled ones it does not shadow, sorted by name (ignoring case).

    Broken packages carry ``error`` instead of raising.
    """
    installed = _packages_in(Path(folder) if folder else default_models_dir(), bundled=False)
    names = {model.name for model in installed}
    bundled = [m for m in _packages_in(bundled_models_dir(), bundled=True) if m.name not in names]
    return sorted(installed + bundled, key=lambda m: m.name.lower())


def _packages_in(folder: Path | None, bundled: bool) -> list[InstalledModel]:
    if folder is None or not folder.is_dir():
        return []
    models = []
    for path in sorted(folder.glob(f"*{PACKAGE_SUFFIX}"), key=lambda p: p.name.lower()):
        name = path.name[: -len(PACKAGE_SUFFIX)]
        try:
            info = read_package_info(path)
        except RecokdError as error:
            models.append(InstalledModel(name, path, error=str(error), bundled=bundled))
            continue
        models.append(InstalledModel(name, path, info.labels, str(info.card.get("description", "")), bundled=bundled))
    return models


def install_model(path: Path, folder: Path | None = None, overwrite: bool = False) -> InstalledModel:
    """Copy the package file ``path`` into ``folder`` under its sanitised card name, after validating it."""
    path, folder = Path(path), Path(folder) if folder else default_models_dir()
    if not path.is_file():
        raise RecokdError(f"Model package {path} does not exist or is not a file.")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".install-", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        shutil.copyfile(path, tmp)
        package = load_package(Path(tmp))  # validate the very bytes that get installed
        target = folder / model_file_name(str(package.card.get("name") or path.name.removesuffix(PACKAGE_SUFFIX)))
        if target.exists() and not overwrite:
            raise RecokdError(f"A model named '{target.name[: -len(PACKAGE_SUFFIX)]}' is already installed in "
                              f"{folder}; pass --overwrite to replace it.")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info("Installed %s as %s", path, target)
    return InstalledModel(target.name[: -len(PACKAGE_SUFFIX)], target, package.labels,
                          str(package.card.get("description", "")))


def remove_model(name: str, folder: Path | None = None) -> Path:
    """Delete the installed model ``name`` from ``folder``; returns the removed file's path. Bundled models stay."""
    path = _installed_path(name, Path(folder) if folder else default_models_dir())
    if path.parent == bundled_models_dir():
        raise RecokdError(f"'{name}' is bundled with ReCoKD ({path.parent}) and cannot be removed.")
    path.unlink()
    log.info("Removed %s", path)
    return path


def resolve_model(name_or_path: str | Path, folder: Path | None = None) -> Path:
    """A package file: ``name_or_path`` itself when it is a file, else the installed model of that name."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    return _installed_path(str(name_or_path), Path(folder) if folder else default_models_dir())


def _installed_path(name: str, folder: Path) -> Path:
    file_name = name if name.endswith(PACKAGE_SUFFIX) else name + PACKAGE_SUFFIX
    if file_name != model_file_name(file_name[: -len(PACKAGE_SUFFIX)]):
        raise RecokdError(f"'{name}' is neither a package file nor a model name (names use letters, digits, "
                          "'.', '_' and '-').")
    for candidate in (folder, bundled_models_dir()):
        if candidate is not None and (candidate / file_name).is_file():
            return candidate / file_name
    known = ", ".join(m.name for m in list_models(folder)) or "none"
    raise RecokdError(f"No model named '{name}' in {folder} (known: {known}). Install one with "
                      "`recokd models add FILE`, or pass a package file path.")
