"""Exponential moving average of the student's weights, used for validation and export."""

from __future__ import annotations

import torch
from torch import nn


class StudentEMA:
    """``ema <- d_t * ema + (1 - d_t) * weights`` after every optimiser step.

    ``d_t = min(decay, (1 + t) / (10 + t))``: the usual warm-up, so that short schedules (a few
    hundred steps, as on a CPU) are not dominated by the random initialisation, which a
    constant 0.999 would keep at ``0.999^t`` weight. Integer buffers are copied, not averaged.
    """

    def __init__(self, network: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.num_updates = 0
        self.state = {k: v.detach().clone() for k, v in network.state_dict().items()}

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        floats_ema, floats_now = [], []
        for key, value in network.state_dict().items():
            if value.dtype.is_floating_point:
                floats_ema.append(self.state[key])
                floats_now.append(value.detach())
            else:
                self.state[key].copy_(value)
        torch._foreach_lerp_(floats_ema, floats_now, 1.0 - decay)

    def load(self, weights: dict, num_updates: int) -> None:
        """Restore from a checkpoint (``weights`` as in :attr:`state`)."""
        self.num_updates = int(num_updates)
        for key, value in weights.items():
            self.state[key].copy_(value)
