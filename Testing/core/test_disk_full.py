"""Running out of disk space while writing: one clear error, exit 2, and no corrupt or temporary file.

The shortage is real, not mocked: the command runs in a child process whose file-size limit
(``RLIMIT_FSIZE``) is below what it must write, with ``SIGXFSZ`` ignored, so the kernel fails
the write exactly as a full disk does (``EFBIG`` instead of ``ENOSPC``; both are handled alike).
The last test gives the wrapper around nnU-Net's own checkpoint writer (used for teachers) a
writer that stops mid-file, as a full disk would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_student import oblique_volume, tiny_package, write_volume

from recokd.nnunet.checkpoint import load_checkpoint, save_atomically, write_checkpoints_atomically
from recokd.package.archive import write_package

pytest.importorskip("resource", reason="file-size limits need a POSIX system")

LIMIT_BYTES = 4096

# Sets the limit, then becomes the real command: rlimits and ignored signals survive exec.
_LIMITED = (
    "import os, resource, signal, sys\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


def _python_with_file_limit(*args: str) -> subprocess.CompletedProcess:
    """``python args`` unable to write any file beyond ``LIMIT_BYTES``."""
    return subprocess.run([sys.executable, "-c", _LIMITED, str(LIMIT_BYTES), *args],
                          capture_output=True, text=True, timeout=300)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def package_file(tmp_path_factory) -> Path:
    return write_package(tiny_package(seed=0), tmp_path_factory.mktemp("model") / "tiny.recokd.zip")


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.seg.nrrd"])
def test_segment_without_space_for_the_labels_exits_2_and_keeps_the_old_output(package_file, tmp_path, name):
    """ITK's NIfTI writer reports success on a failed write; the read-back check catches it."""
    source = write_volume(oblique_volume(size_xyz=(64, 64, 48), spacing=(1.0, 1.0, 1.0)), tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(b"the previous result")
    result = _python_with_file_limit("-m", "recokd", "segment", "-m", str(package_file), "-i", str(source), "-o",
                                     str(out / name), "--overwrite", "--device", "cpu", "--threads", "1",
                                     "--fast", "--progress", "json")
    assert result.returncode == 2, result.stderr
    (error,) = [json.loads(line) for line in result.stdout.splitlines() if '"error"' in line]
    assert error["message"].startswith(f"Cannot write {out / name}")
    assert result.stderr.strip().splitlines()[-1] == f"recokd segment: error: {error['message']}"
    assert _files(out) == [name] and (out / name).read_bytes() == b"the previous result"


def test_export_without_space_for_the_package_exits_2_with_the_disk_space_message(package_file, tmp_path):
    result = _python_with_file_limit("-m", "recokd", "models", "add", str(package_file), "--models-dir", str(tmp_path))
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("recokd models: error: Out of disk space") and "only ever replaced by complete files" in message
    assert "Traceback" not in result.stderr
    assert _files(tmp_path) == []


def test_checkpoint_without_space_keeps_the_previous_checkpoint_intact(tmp_path):
    latest = tmp_path / "checkpoint_latest.pth"
    save_atomically({"epoch": 3, "network_weights": {"w": torch.zeros(4)}}, latest)
    script = ("import sys, torch; from recokd.nnunet.checkpoint import save_atomically; "
              "save_atomically({'epoch': 4, 'network_weights': {'w': torch.zeros(100_000)}}, sys.argv[1])")
    child = _python_with_file_limit("-c", script, str(latest))
    assert child.returncode != 0 and "File too large" in child.stderr
    assert _files(tmp_path) == ["checkpoint_latest.pth"]
    assert load_checkpoint(latest)["epoch"] == 3


class _StockTrainer:
    """nnU-Net's ``save_checkpoint`` contract: ``torch.save`` straight onto the given name."""

    def __init__(self, fail_after_bytes: int | None = None) -> None:
        self.epoch = 0
        self.fail_after_bytes = fail_after_bytes

    def save_checkpoint(self, filename: str) -> None:
        self.epoch += 1
        if self.fail_after_bytes is None:
            torch.save({"network_weights": {"w": torch.full((4,), float(self.epoch))}}, filename)
            return
        Path(filename).write_bytes(b"PK" + bytes(self.fail_after_bytes))  # cut off mid-write
        raise OSError(28, "No space left on device", filename)


def test_a_stock_nnunet_trainer_replaces_its_checkpoint_only_with_a_complete_one(tmp_path):
    latest = tmp_path / "checkpoint_latest.pth"
    trainer = _StockTrainer()
    write_checkpoints_atomically(trainer)
    trainer.save_checkpoint(str(latest))
    assert _files(tmp_path) == ["checkpoint_latest.pth"]
    trainer.fail_after_bytes = 1000
    with pytest.raises(OSError, match="No space left"):
        trainer.save_checkpoint(str(latest))
    assert _files(tmp_path) == ["checkpoint_latest.pth"]
    assert load_checkpoint(latest)["network_weights"]["w"].tolist() == [1.0] * 4
