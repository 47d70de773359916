"""Reading and writing nnU-Net checkpoints without arbitrary unpickling and without torn files.

nnU-Net stores checkpoints with ``torch.save``: a pickle. Loading one with
``weights_only=True`` restricts unpickling to tensors, containers and the few numpy types
nnU-Net's logger leaves in them (scalars, dtypes, small arrays), so a hostile checkpoint
cannot run code. Writes go to a temporary file in the same folder and are renamed over the
target, so an interrupted write (kill -9, full disk) never leaves a corrupt checkpoint.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from recokd.errors import RecokdError

_NUMPY_SAFE_GLOBALS = [
    np.dtype,
    np.ndarray,
    np._core.multiarray.scalar,
    np._core.multiarray._reconstruct,
    *{type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"},
]


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load an nnU-Net/ReCoKD checkpoint with ``weights_only=True``; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise RecokdError(f"Checkpoint {path} does not exist.")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip; a cut-off write loses its central directory
        raise RecokdError(f"Checkpoint {path} is truncated or corrupt (not a complete PyTorch checkpoint). "
                          "Use an earlier checkpoint or retrain.")
    try:
        with torch.serialization.safe_globals(_NUMPY_SAFE_GLOBALS):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise RecokdError(
            f"Checkpoint {path} holds objects other than tensors and plain data, so it is not loaded "
            f"(unpickling it could run code). Details: {_unsupported_global(error)}"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as error:
        raise RecokdError(f"Checkpoint {path} is truncated or corrupt ({_first_line(error)}). "
                          "Use an earlier checkpoint or retrain.") from error
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise RecokdError(f"{path} is not an nnU-Net checkpoint (no 'network_weights').")
    return checkpoint


def _unsupported_global(error: BaseException) -> str:
    """torch names the refused class on a line of its own; that is the useful part."""
    lines = str(error).splitlines()
    return next((line.strip() for line in lines if "Unsupported global" in line), _first_line(error))


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def save_atomically(obj: object, path: Path) -> None:
    """``torch.save`` to a temporary sibling, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_checkpoints_atomically(trainer) -> None:
    """Make a stock nnU-Net trainer write its checkpoints the way :func:`save_atomically` does.

    nnU-Net's ``save_checkpoint`` calls ``torch.save`` on the final name, so a kill or a full
    disk during the write would leave a broken ``checkpoint_latest.pth``. Wrapped, it writes a
    temporary sibling that replaces the checkpoint only once complete.
    """
    save = trainer.save_checkpoint

    def save_then_replace(filename: str) -> None:
        path = Path(filename)
        temporary = path.with_name(f".{path.name}.partial")
        try:
            save(str(temporary))
            if temporary.exists():  # nnU-Net writes on rank 0 only, and not with checkpointing disabled
                os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    trainer.save_checkpoint = save_then_replace
