"""Size and cost of a network: parameter count and FLOPs for one input patch.

FLOPs are what :class:`torch.utils.flop_counter.FlopCounterMode` counts: convolutions,
transposed convolutions and matrix products, two FLOPs per multiply-add. Normalisation,
activations and additions are not counted, as is usual when papers compare networks.
Counting runs on PyTorch's ``meta`` device when the network is there (see
:func:`plans_complexity`): shapes only, no arithmetic, so a teacher's full patch costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from recokd.nnunet.network import build_network


@dataclass(frozen=True)
class Complexity:
    """``parameters`` of a network and ``flops`` of one forward pass on ``input_shape`` (B, C, *spatial)."""

    parameters: int
    flops: int
    input_shape: tuple[int, ...]


def count_parameters(network: nn.Module) -> int:
    """Number of distinct parameters (a tensor registered under two names counts once)."""
    return sum(p.numel() for p in network.parameters())


def count_flops(network: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one inference forward pass (``eval``, no grad) on a zero input of ``input_shape``."""
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            network(torch.zeros(tuple(input_shape), device=device))
    finally:
        network.train(was_training)
    return int(counter.get_total_flops())


def network_complexity(network: nn.Module, input_shape: Sequence[int]) -> Complexity:
    """Parameters and FLOPs of ``network`` for one input of ``input_shape``."""
    return Complexity(count_parameters(network), count_flops(network, input_shape), tuple(input_shape))


def plans_complexity(plans: dict, dataset_json: dict, configuration: str) -> Complexity:
    """Complexity of the network ``plans[configuration]`` describes, for one patch of its patch size."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(plans)
    config = plans_manager.get_configuration(configuration)
    channels = determine_num_input_channels(plans_manager, config, dataset_json)
    with torch.device("meta"):
        network = build_network(plans, dataset_json, configuration)
    return network_complexity(network, (1, channels, *config.patch_size))
