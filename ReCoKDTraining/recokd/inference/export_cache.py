"""The ONNX export of a package's network, made once and cached beside the installed models.

OpenVINO and ONNX Runtime both run the network from its ONNX export (one input ``image``
``(batch, c, *patch)`` with a dynamic batch axis, one output ``logits``). Exporting traces the
network, which takes seconds for a student and longer for a teacher, so the export is kept in
``$RECOKD_EXPORT_CACHE`` or else ``<installed models folder>/.exports/<digest>/``, where the
digest is a sha256 over what determines the network: its configuration in the plans, the
input shape and every weight. A changed package (new weights or plans) gets a new digest,
and the entries that earlier versions of the same package file left are removed (packages
are told apart by their file, not their name: a demo's three students share one name).
Nothing is ever written into the package or into the read-only folder of bundled models.

An entry is trusted only when its ``manifest.json`` names the same digest and input shape
and the ONNX file's sha256 equals the one recorded at export; anything else (a truncated
file, a hand-edited graph, a half-written folder) is deleted and exported again. Entries
are written to a temporary folder and renamed into place, so a reader never sees half of
one. Where the cache folder cannot be written, the export goes to a temporary folder used
for this load only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from recokd.errors import RecokdError
from recokd.package.model import ModelPackage
from recokd.package.weights import update_with_state_dict

log = logging.getLogger(__name__)

CACHE_VARIABLE = "RECOKD_EXPORT_CACHE"
CACHE_FORMAT = 1  # bump when the export itself changes, so older entries are not reused
ONNX_OPSET = 17
ONNX_FILE = "network.onnx"
MANIFEST_FILE = "manifest.json"


def export_cache_dir() -> Path:
    """``$RECOKD_EXPORT_CACHE``, else ``.exports`` in the installed models folder."""
    from recokd.package.registry import default_models_dir

    override = os.environ.get(CACHE_VARIABLE)
    return Path(override).expanduser() if override else default_models_dir() / ".exports"


def network_digest(package: ModelPackage, input_shape: Sequence[int]) -> str:
    """sha256 over the cache format, ``input_shape`` ``(c, *patch)``, the configuration's plans and every weight."""
    digest = hashlib.sha256()
    configuration = package.plans["configurations"][package.configuration]
    header = {"format": CACHE_FORMAT, "input_shape": list(input_shape), "configuration": configuration}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    update_with_state_dict(digest, package.state_dict)
    return digest.hexdigest()


@contextmanager
def onnx_export(package: ModelPackage, network: torch.nn.Module, input_shape: Sequence[int],
                cache_dir: Path | None = None) -> Iterator[Path]:
    """The path of the network's ONNX export: a verified cache entry, else a new export.

    ``network`` is the package's network in eval mode on the CPU; ``input_shape`` is one
    sample's ``(c, *patch)``. The path is valid inside the ``with`` block (after it, only when
    it is a cache entry).
    """
    root = Path(cache_dir) if cache_dir is not None else export_cache_dir()
    digest = network_digest(package, input_shape)
    entry = root / digest[:32]
    if _verified(entry, digest, input_shape):
        log.info("ONNX export of %s reused from %s", package.name, entry)
        yield entry / ONNX_FILE
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    except OSError as error:
        log.warning("Cannot write the export cache %s (%s); exporting for this load only.", root, error)
        with tempfile.TemporaryDirectory(prefix="recokd-onnx-") as temporary:
            yield _export(network, input_shape, Path(temporary), digest, package)
        return
    try:
        _export(network, input_shape, staging, digest, package)
        if not _verified(entry, digest, input_shape):  # else another process (a job array's part) just wrote it
            if entry.exists():
                log.warning("Replacing the export cache entry %s: it did not verify.", entry)
                shutil.rmtree(entry, ignore_errors=True)
            try:
                os.replace(staging, entry)
            except OSError:
                if not _verified(entry, digest, input_shape):
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _remove_earlier_versions(root, _source(package), keep=entry)
    yield entry / ONNX_FILE


def _source(package: ModelPackage) -> str | None:
    """The package file it was loaded from, resolved; None for a package built in memory."""
    return str(Path(package.source).resolve()) if package.source is not None else None


def _export(network: torch.nn.Module, input_shape: Sequence[int], folder: Path, digest: str, package: ModelPackage
            ) -> Path:
    """Export ``network`` to ``folder/network.onnx`` and write its manifest; returns the ONNX path."""
    path = folder / ONNX_FILE
    example = torch.zeros((1, *input_shape), dtype=torch.float32)
    name = package.name
    log.info("Exporting %s to ONNX (once per package)", name)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and instance-norm notes
            torch.onnx.export(
                network, (example,), str(path), input_names=["image"], output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=ONNX_OPSET, dynamo=False,
            )
    except Exception as error:
        raise RecokdError(f"Cannot export {name}'s network to ONNX ({type(error).__name__}: {error}); "
                          "use --backend torch.") from error
    manifest = {"format": CACHE_FORMAT, "package": name, "source": _source(package), "digest": digest,
                "input_shape": list(input_shape),
                "opset": ONNX_OPSET, "torch": torch.__version__, "onnx_sha256": _file_sha256(path)}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    return path


def _verified(entry: Path, digest: str, input_shape: Sequence[int]) -> bool:
    """Whether ``entry`` holds the export of this digest, byte for byte as it was written."""
    try:
        manifest = json.loads((entry / MANIFEST_FILE).read_text())
        return (
            isinstance(manifest, dict)
            and manifest.get("format") == CACHE_FORMAT
            and manifest.get("digest") == digest
            and manifest.get("input_shape") == list(input_shape)
            and manifest.get("onnx_sha256") == _file_sha256(entry / ONNX_FILE)
        )
    except (OSError, ValueError):
        return False


def _remove_earlier_versions(root: Path, source: str | None, keep: Path) -> None:
    """Delete the other entries exported from the package file ``source`` (it has changed since)."""
    if source is None:
        return
    for entry in root.iterdir():
        if entry == keep or not entry.is_dir() or entry.name.startswith("."):
            continue
        try:
            stale = json.loads((entry / MANIFEST_FILE).read_text()).get("source") == source
        except (OSError, ValueError, AttributeError):
            continue
        if stale:
            log.info("Removing the earlier export %s of %s", entry, source)
            shutil.rmtree(entry, ignore_errors=True)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
