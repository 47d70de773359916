"""Per-epoch progress out of nnU-Net's trainer, through its own logger plug-in point.

nnU-Net's ``MetaLogger`` forwards every logged value to the loggers in its ``loggers`` list
(that is how its Weights & Biases logger works). :class:`EpochProgress` sits there and calls
back once an epoch ends, with that epoch's numbers, so the stock ``nnUNetTrainer`` (teacher)
and the ReCoKD trainer report progress the same way without changing their loops.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

EpochCallback = Callable[[int, int, dict], None]  # (epochs done, total epochs, this epoch's values)


class EpochProgress:
    """An nnU-Net logger that calls ``callback(done, total, values)`` after each epoch."""

    def __init__(self, num_epochs: int, callback: EpochCallback) -> None:
        self.num_epochs = num_epochs
        self.callback = callback
        self._values: dict[str, Any] = {}

    def attach(self, trainer) -> EpochProgress:
        trainer.logger.loggers.append(self)
        return self

    def update_config(self, config: dict) -> None:
        """Part of nnU-Net's logger interface; configuration is not progress."""

    def log_summary(self, key: str, value: Any) -> None:
        """Part of nnU-Net's logger interface; summaries come after training."""

    def log(self, key: str, value: Any, step: int) -> None:
        self._values[key] = value
        if key == "epoch_end_timestamps":
            values = {k: float(v) for k, v in self._values.items()
                      if isinstance(v, numbers.Real) and not k.endswith("timestamps")}
            values["epoch_seconds"] = float(value - self._values.get("epoch_start_timestamps", value))
            self.callback(step + 1, self.num_epochs, values)
