"""The benchmark's data: a fixed, seeded train/test split written as an nnU-Net raw dataset.

The test cases must never reach training or model selection, and nnU-Net trains and
cross-validates on everything in ``imagesTr``. So the benchmark builds its own raw dataset in
its work directory: ``imagesTr``/``labelsTr`` hold the training split only and
``imagesTs``/``labelsTs`` the test split. Files are symbolic links to the source (copies
where the file system has no links); the source folder is only read.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recokd.data.phantom import PhantomConfig, write_dataset
from recokd.errors import RecokdError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Case identifiers of the training and test parts, and the seed that drew them."""

    seed: int
    train: tuple[str, ...]
    test: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"seed": self.seed, "num_train": len(self.train), "num_test": len(self.test),
                "train": list(self.train), "test": list(self.test)}


def case_ids(raw_dataset: Path, part: str = "Tr") -> list[str]:
    """Identifiers of the labelled cases in ``labels<part>`` of an nnU-Net raw dataset, sorted."""
    ending = _file_ending(raw_dataset)
    folder = Path(raw_dataset) / f"labels{part}"
    ids = sorted(p.name[: -len(ending)] for p in folder.glob(f"*{ending}")) if folder.is_dir() else []
    if not ids:
        raise RecokdError(f"No labelled cases in {folder}: is {raw_dataset} an nnU-Net raw dataset?")
    return ids


def seeded_split(ids: list[str], test_fraction: float, seed: int) -> Split:
    """A random split of ``ids`` with ``round(test_fraction * n)`` test cases (at least one of each part)."""
    if not 0 < test_fraction < 1:
        raise RecokdError(f"The test fraction must be between 0 and 1, got {test_fraction}.")
    ids = sorted(ids)
    num_test = min(len(ids) - 1, max(1, round(test_fraction * len(ids))))
    if num_test < 1:
        raise RecokdError(f"Need at least two cases to split, got {len(ids)}.")
    order = np.random.default_rng(seed).permutation(len(ids))
    test = {ids[i] for i in order[:num_test]}
    return Split(seed, tuple(i for i in ids if i not in test), tuple(sorted(test)))


def write_split_dataset(source: Path, out: Path, split: Split, description: str) -> Path:
    """An nnU-Net raw dataset at ``out`` with the training split in ``*Tr`` and the test split in ``*Ts``."""
    source, out = Path(source), Path(out)
    ending = _file_ending(source)
    for part, ids in (("Tr", split.train), ("Ts", split.test)):
        for case in ids:
            images = sorted((source / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{ending}"))
            if not images:
                raise RecokdError(f"Case {case} has a label but no image in {source / 'imagesTr'}.")
            for file, kind in [(image, "images") for image in images] + [(source / "labelsTr" / f"{case}{ending}",
                                                                         "labels")]:
                _link(file, out / f"{kind}{part}" / file.name)
    dataset_json = json.loads((source / "dataset.json").read_text())
    dataset_json["numTraining"] = len(split.train)
    dataset_json["description"] = f"{description} (source: {dataset_json.get('description', source.name)})"
    (out / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    log.info("Benchmark dataset %s: %d training, %d test cases", out, len(split.train), len(split.test))
    return out


def write_phantom_split(out: Path, num_train: int, num_test: int, shape: tuple[int, int, int], seed: int) -> Split:
    """The phantom as a benchmark dataset (its generator already writes separate test cases)."""
    if not (out / "dataset.json").is_file():
        write_dataset(out, num_train, num_test, seed, PhantomConfig(shape=shape))
    return Split(seed, tuple(case_ids(out, "Tr")), tuple(case_ids(out, "Ts")))


def held_out_cases(raw_dataset: Path) -> list[tuple[Path, Path]]:
    """``(image, reference label)`` pairs of the test part (single-channel images ``<case>_0000``)."""
    raw_dataset = Path(raw_dataset)
    ending = _file_ending(raw_dataset)
    return [(raw_dataset / "imagesTs" / f"{case}_0000{ending}", raw_dataset / "labelsTs" / f"{case}{ending}")
            for case in case_ids(raw_dataset, "Ts")]


def _file_ending(raw_dataset: Path) -> str:
    path = Path(raw_dataset) / "dataset.json"
    if not path.is_file():
        raise RecokdError(f"{path} is missing: {raw_dataset} is not an nnU-Net raw dataset.")
    return json.loads(path.read_text()).get("file_ending", ".nii.gz")


def _link(target: Path, link: Path) -> None:
    if link.exists():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(target.resolve(), link)
    except OSError:  # no symbolic links here (e.g. Windows without the privilege)
        shutil.copy2(target, link)
