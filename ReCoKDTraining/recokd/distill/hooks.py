"""Capture the encoder features ReCo-KD distils, without touching the network's code.

The student stays an ordinary nnU-Net network (``dynamic_network_architectures``
``PlainConvUNet`` or ``ResidualEncoderUNet``): forward hooks on ``network.encoder.stages[i]``
read the outputs of every encoder stage but the bottleneck, so nothing of the distillation
exists in the exported model.
"""

from __future__ import annotations

from types import TracebackType

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from recokd.errors import RecokdError


def unwrap_network(network: nn.Module) -> nn.Module:
    """The plain network inside DDP / DataParallel (``.module``) and ``torch.compile`` (``._orig_mod``).

    Hooks must sit on the modules that actually run; the wrappers only forward to them.
    """
    while True:
        if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            network = network.module
        elif isinstance(getattr(network, "_orig_mod", None), nn.Module):
            network = network._orig_mod
        else:
            return network


class EncoderFeatureHooks:
    """Forward hooks on encoder stages ``0 .. K-2`` of an nnU-Net network.

    After each forward pass, ``features[i]`` is the output of ``encoder.stages[i]``, shape
    ``(B, channels[i], *spatial_i)`` with ``spatial_i = patch / prod(strides[:i+1])``. The list
    is cleared when the next forward starts (a forward pre-hook on the encoder), so it never
    mixes two passes or keeps old activations alive longer than one step.

    Args:
        network: the network, possibly wrapped in DDP or ``torch.compile`` (register hooks
            before compiling, or disable compilation, for the hooks to fire).
        detach: store detached features (for the frozen teacher).

    Usable as a context manager; ``remove()`` detaches every hook.
    """

    def __init__(self, network: nn.Module, detach: bool = False) -> None:
        encoder = getattr(unwrap_network(network), "encoder", None)
        stages = getattr(encoder, "stages", None)
        if not isinstance(stages, nn.Sequential) or len(stages) < 2:
            raise RecokdError(
                f"{type(network).__name__} has no nnU-Net encoder with at least two stages "
                "(network.encoder.stages); ReCo-KD needs a dynamic_network_architectures U-Net "
                "such as PlainConvUNet or ResidualEncoderUNet."
            )
        self.detach = detach
        self.features: list[torch.Tensor] = []
        self.channels: list[int] = [int(c) for c in encoder.output_channels[: len(stages) - 1]]
        self._handles: list[RemovableHandle] = [encoder.register_forward_pre_hook(self._clear)]
        self._handles += [stage.register_forward_hook(self._store) for stage in list(stages)[:-1]]

    def _clear(self, module: nn.Module, args: tuple) -> None:
        self.features = []

    def _store(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.features.append(output.detach() if self.detach else output)

    def remove(self) -> None:
        """Remove every hook; ``features`` keeps the last captured pass."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> EncoderFeatureHooks:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()
