"""Which share of a batch's cases are labeled, when labeled and teacher-labelled cases train together.

nnU-Net draws every case of a batch uniformly at random (with replacement) from the training
cases; its data loader takes per-case ``sampling_probabilities`` but its trainer always passes
None. With a labeled share ``s``, a labeled case is drawn with probability ``s / n_labeled`` and a
teacher-labelled one with ``(1 - s) / n_teacher``, so each draw is labeled with probability ``s``
however few labels there are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as nnunet_trainer_module


def case_probabilities(identifiers: Sequence[str], teacher_labelled: frozenset[str],
                       labeled_share: float) -> np.ndarray | None:
    """Per-case draw probabilities in ``identifiers``' order; None (uniform) unless both kinds are present."""
    is_teacher = np.array([name in teacher_labelled for name in identifiers])
    teacher_count = int(is_teacher.sum())
    if labeled_share < 0 or teacher_count in (0, len(identifiers)):
        return None
    return np.where(is_teacher, (1 - labeled_share) / teacher_count, labeled_share / (len(identifiers) - teacher_count))


@contextmanager
def sampling_probabilities(probabilities_for: Callable[[Sequence[str]], np.ndarray | None]) -> Iterator[None]:
    """While inside, nnU-Net's trainer builds its data loaders with ``probabilities_for(dataset.identifiers)``.

    ``nnUNetTrainer.get_dataloaders`` hard-codes ``sampling_probabilities=None``; this swaps the
    trainer module's reference to the loader class for the call (the loader must get the
    probabilities when built: augmentation workers receive a copy of it).
    """
    original = nnunet_trainer_module.nnUNetDataLoader

    def loader(data, *args, **kwargs):
        return original(data, *args, **(kwargs | {"sampling_probabilities": probabilities_for(data.identifiers)}))

    nnunet_trainer_module.nnUNetDataLoader = loader
    try:
        yield
    finally:
        nnunet_trainer_module.nnUNetDataLoader = original
