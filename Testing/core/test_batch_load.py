"""Load: 50 volumes in one ``recokd segment`` process; resident memory stays flat across the batch."""

from __future__ import annotations

import json
import subprocess
import sys

from tiny_student import oblique_volume, tiny_package, write_volume

from recokd.package.archive import write_package

VOLUMES = 50
# One leaked copy of each input as float32 (48 x 48 x 40 voxels, 0.35 MiB) would grow memory by 14 MiB
# between case 10 and case 50; measured here, memory did not move at all over those cases.
MAX_GROWTH_BYTES = 8 << 20


def test_fifty_volumes_in_one_process_keep_memory_flat(tmp_path):
    package_file = write_package(tiny_package(seed=0), tmp_path / "tiny.recokd.zip")
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(VOLUMES):
        volume = oblique_volume(size_xyz=(48, 48, 40), spacing=(1.0, 1.0, 1.0), seed=index)
        write_volume(volume, folder / f"case_{index:03d}.nii.gz")
    result = subprocess.run(
        [sys.executable, "-m", "recokd", "segment", "-m", str(package_file), "-i", str(folder), "-o",
         str(tmp_path / "out"), "--device", "cpu", "--threads", "1", "--fast", "--progress", "json"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    outputs = json.loads(result.stdout.splitlines()[-1])["outputs"]
    assert len(outputs) == VOLUMES and len(list((tmp_path / "out").iterdir())) == VOLUMES
    rss = [output["rss_bytes"] for output in outputs]
    growth = rss[-1] - rss[9]
    print(f"RSS after case 10: {rss[9] / 2**20:.1f} MiB, after case 50: {rss[-1] / 2**20:.1f} MiB; "
          f"{sum(o['seconds'] for o in outputs) / VOLUMES:.2f} s per case; {[round(r / 2**20, 1) for r in rss]}")
    assert growth < MAX_GROWTH_BYTES, [round(r / 2**20, 1) for r in rss]
