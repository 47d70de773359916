"""Run loss math in float32, also inside an autocast region.

Under CUDA autocast, matmuls and 1x1 convs would run in float16, where squared feature
differences and exponentials overflow. The distillation losses therefore switch autocast
off for their own device and cast their inputs to float32; the cost is small next to the
networks' forward passes.
"""

from __future__ import annotations

import torch


def full_precision(device: torch.device) -> torch.autocast:
    """A context that disables autocast for ``device``'s type (``cuda``, ``cpu``, ...)."""
    return torch.autocast(device_type=device.type, enabled=False)
