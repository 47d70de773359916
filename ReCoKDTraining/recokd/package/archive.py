"""The model package file: writing it, and reading it without trusting it.

A package is one zip file (``*.recokd.zip``) with exactly the members listed in
:mod:`recokd.package.model`. Reading never unpickles and never extracts to disk: members are
read into memory with :mod:`zipfile`, each through a size cap, and refused when

- the file is not a zip or is truncated;
- a member name is absolute, has a drive letter, a backslash or a ``..`` component, is a
  symbolic link or other non-regular file, is encrypted, appears twice, or is not one of the
  allowed members (pickle-capable files such as ``.pkl``/``.pth`` get their own message);
- a required member is missing, or a member is larger than its cap (declared size checked
  first, then the bytes actually inflated, so a zip bomb cannot exhaust memory);
- a member's sha256 differs from ``checksums.json``;
- a JSON member has the wrong shape (:mod:`recokd.package.validation`), the plans name
  network code outside the allow-list, or the tensors' names, shapes or dtypes do not fit the
  network the plans build (:mod:`recokd.package.weights`);
- ``labels.json`` does not describe exactly the labels of ``dataset.json``.

Weights are safetensors (a JSON header plus raw tensor bytes: nothing in them executes).
Writing goes to a temporary file in the target folder, is read back with :func:`load_package`
and only then renamed over the target, so a package on disk is always whole and loadable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import safetensors.torch

from recokd.errors import RecokdError
from recokd.package import validation
from recokd.package.card import card_markdown
from recokd.package.model import LabelInfo, ModelPackage
from recokd.package.weights import network_skeleton, pack_state_dict, unpack_state_dict

log = logging.getLogger(__name__)

PACKAGE_SUFFIX = ".recokd.zip"
WEIGHTS = "weights.safetensors"
PLANS = "plans.json"
DATASET = "dataset.json"
LABELS = "labels.json"
CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"
INFERENCE = "inference.json"
CHECKSUMS = "checksums.json"
MEMBERS = (WEIGHTS, PLANS, DATASET, LABELS, CARD_JSON, CARD_MD, INFERENCE, CHECKSUMS)
CHECKSUMMED = frozenset(MEMBERS) - {CHECKSUMS}

DEFAULT_MAX_MEMBER_BYTES = 2 * 1024**3
MAX_TEXT_MEMBER_BYTES = 16 * 1024**2  # JSON and Markdown members are kilobytes; weights may be large
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".pth", ".pt", ".ckpt", ".npy", ".npz", ".joblib", ".bin"})
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same model gives the same bytes
_CHUNK = 1024**2


@dataclass(frozen=True)
class PackageInfo:
    """What listing a package needs, read from its small members only."""

    card: dict
    labels: list[LabelInfo]


def write_package(package: ModelPackage, out: Path, overwrite: bool = False) -> Path:
    """Write ``package`` to ``out`` (a ``*.recokd.zip`` path) atomically; returns ``out``."""
    out = Path(out)
    if not out.name.endswith(PACKAGE_SUFFIX) or out.name == PACKAGE_SUFFIX:
        raise RecokdError(f"Model package file names end with '{PACKAGE_SUFFIX}'; got '{out.name}'.")
    if out.exists() and not overwrite:
        raise RecokdError(f"{out} already exists; pass --overwrite (overwrite=True) to replace it.")
    network = network_skeleton(package.plans, package.dataset_json, package.configuration)
    members = {
        WEIGHTS: safetensors.torch.save(pack_state_dict(package.state_dict, network), metadata={"format": "pt"}),
        PLANS: _json_bytes(package.plans),
        DATASET: _json_bytes(package.dataset_json),
        LABELS: _json_bytes({"labels": [label.to_dict() for label in package.labels]}),
        CARD_JSON: _json_bytes(package.card),
        CARD_MD: card_markdown(package.card, package.labels).encode("utf-8"),
        INFERENCE: _json_bytes({
            "configuration": package.configuration,
            "mirror_axes": None if package.mirror_axes is None else list(package.mirror_axes),
        }),
    }
    members[CHECKSUMS] = _json_bytes({name: hashlib.sha256(data).hexdigest() for name, data in members.items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            with zipfile.ZipFile(handle, "w") as archive:
                for name, data in members.items():
                    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                    info.compress_type = zipfile.ZIP_STORED if name == WEIGHTS else zipfile.ZIP_DEFLATED
                    info.external_attr = (stat.S_IFREG | 0o644) << 16
                    archive.writestr(info, data)
            handle.flush()
            os.fsync(handle.fileno())
        load_package(Path(tmp))  # never leave a package behind that the loader refuses
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("Wrote model package %s (%d bytes)", out, out.stat().st_size)
    return out


def load_package(path: Path, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> ModelPackage:
    """Read and verify a package file (see the module docstring for everything that is refused)."""
    path = Path(path)
    with _open(path, max_member_bytes) as reader:
        checksums = reader.checksums()
        plans = validation.check_plans(reader.read_json(PLANS, checksums))
        dataset_json = validation.check_dataset_json(reader.read_json(DATASET, checksums))
        labels = validation.parse_labels(reader.read_json(LABELS, checksums))
        card = validation.check_card(reader.read_json(CARD_JSON, checksums))
        configuration, mirror_axes = validation.parse_inference(reader.read_json(INFERENCE, checksums), plans)
        reader.read(CARD_MD, checksums)
        weights = reader.read(WEIGHTS, checksums)
    validation.check_labels_match(labels, dataset_json)
    network = network_skeleton(plans, dataset_json, configuration)
    try:
        tensors = safetensors.torch.load(weights)
    except Exception as error:  # the Rust parser's errors on hostile bytes have no common type
        raise RecokdError(f"{path}: weights.safetensors is not a valid safetensors file ({error}). "
                          f"{validation.REEXPORT}") from error
    state_dict = unpack_state_dict(tensors, network)
    return ModelPackage(plans, dataset_json, configuration, labels, state_dict, card, mirror_axes, source=path)


def read_package_info(path: Path) -> PackageInfo:
    """Card and labels of a package, checked, without reading its weights (for listing)."""
    path = Path(path)
    with _open(path, DEFAULT_MAX_MEMBER_BYTES) as reader:  # weights are listed, never read here
        checksums = reader.checksums()
        dataset_json = validation.check_dataset_json(reader.read_json(DATASET, checksums))
        labels = validation.parse_labels(reader.read_json(LABELS, checksums))
        card = validation.check_card(reader.read_json(CARD_JSON, checksums))
    validation.check_labels_match(labels, dataset_json)
    return PackageInfo(card, labels)


class _Reader:
    """A package zip whose member list has been checked; reads members with caps and checksums."""

    def __init__(self, path: Path, archive: zipfile.ZipFile, max_member_bytes: int) -> None:
        self.path = path
        self.archive = archive
        self.max_member_bytes = max_member_bytes
        self.infos = self._checked_members()

    def checksums(self) -> dict[str, str]:
        return validation.parse_checksums(self.read_json(CHECKSUMS, None), set(CHECKSUMMED))

    def read_json(self, name: str, checksums: dict[str, str] | None) -> object:
        try:
            return json.loads(self.read(name, checksums))
        except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise RecokdError(f"{self.path}: {name} is not valid JSON ({error}). {validation.REEXPORT}") from error

    def read(self, name: str, checksums: dict[str, str] | None) -> bytes:
        """The member's bytes, at most its cap; checked against ``checksums[name]`` when given."""
        info, cap = self.infos[name], self._cap(name)
        digest, data = hashlib.sha256(), bytearray()
        try:
            with self.archive.open(info) as member:
                while chunk := member.read(min(_CHUNK, cap + 1 - len(data))):
                    digest.update(chunk)
                    data += chunk
                    if len(data) > cap:
                        raise RecokdError(self._too_large(name, cap))
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as error:
            raise RecokdError(f"{self.path}: member '{name}' cannot be read ({error}); the file is damaged or "
                              "truncated. Obtain a fresh copy or re-export the model.") from error
        if checksums is not None and digest.hexdigest() != checksums[name]:
            raise RecokdError(f"{self.path}: member '{name}' does not match its checksum in checksums.json; the "
                              "file was altered or damaged. Obtain a fresh copy or re-export the model.")
        return bytes(data)

    def _cap(self, name: str) -> int:
        return self.max_member_bytes if name == WEIGHTS else min(self.max_member_bytes, MAX_TEXT_MEMBER_BYTES)

    def _too_large(self, name: str, cap: int) -> str:
        return (f"{self.path}: member '{name}' is larger than the {cap:,}-byte limit for it; refused (a "
                "damaged file or a zip bomb). Raise max_member_bytes only for a package you trust.")

    def _checked_members(self) -> dict[str, zipfile.ZipInfo]:
        infos: dict[str, zipfile.ZipInfo] = {}
        for info in self.archive.infolist():
            name = info.filename
            problem = _name_problem(name) or _type_problem(info)
            if problem:
                raise RecokdError(f"{self.path}: member '{name}' {problem}; refused. Only files made by "
                                  "`recokd export` are accepted: re-export the model.")
            if name in infos:
                raise RecokdError(f"{self.path}: member '{name}' appears twice; refused (the copies could differ). "
                                  f"{validation.REEXPORT}")
            if info.file_size > self._cap(name):
                raise RecokdError(self._too_large(name, self._cap(name)))
            infos[name] = info
        missing = [name for name in MEMBERS if name not in infos]
        if missing:
            raise RecokdError(f"{self.path} lacks required member(s) {', '.join(missing)}; the package is "
                              f"incomplete. {validation.REEXPORT}")
        return infos


@contextmanager
def _open(path: Path, max_member_bytes: int) -> Iterator[_Reader]:
    if not path.is_file():
        raise RecokdError(f"Model package {path} does not exist or is not a file.")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
        raise RecokdError(f"{path} is not a model package: not a zip file, or truncated ({error}). "
                          "Obtain a fresh copy or re-export the model.") from error
    with archive:
        yield _Reader(path, archive, max_member_bytes)


def _name_problem(name: str) -> str | None:
    """Why a member name is refused, or ``None`` when it is one of the allowed members."""
    if "\\" in name:
        return "contains a backslash (a Windows path)"
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "contains '..' and would point outside the package"
    if name in MEMBERS:
        return None
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return (f"is a pickle-capable file ({suffix}); packages never contain pickles, because loading one can "
                "run arbitrary code")
    return f"is not part of the model package format (allowed: {', '.join(MEMBERS)})"


def _type_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member's file type or flags are refused: links, devices, folders, encryption."""
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "is a symbolic link (it could point outside the package)"
    if kind not in (0, stat.S_IFREG) or info.is_dir():
        return "is not a regular file"
    if info.flag_bits & 0x1:
        return "is encrypted"
    return None


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, indent=2, default=_json_default).encode("utf-8")


def _json_default(value: object) -> object:
    """Plain JSON for values a card may carry: numpy/torch scalars and arrays, paths, fractions."""
    for method in ("item", "tolist"):
        if callable(getattr(value, method, None)):
            try:
                return getattr(value, method)()
            except (ValueError, RuntimeError):  # .item() of a multi-element array
                continue
    return str(value)
