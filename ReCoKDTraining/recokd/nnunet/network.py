"""Build the network an nnU-Net v2 plans file describes (the one place that does it)."""

from __future__ import annotations

from torch import nn


def build_network(plans: dict, dataset_json: dict, configuration: str, deep_supervision: bool = False) -> nn.Module:
    """The ``dynamic_network_architectures`` network of ``plans[configuration]``.

    Input channels come from ``dataset_json["channel_names"]``, outputs from nnU-Net's label
    manager (one head per class, or per region). Works for any architecture class nnU-Net
    can build (``PlainConvUNet``, ``ResidualEncoderUNet``, ...).
    """
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    label_manager = plans_manager.get_label_manager(dataset_json)
    return get_network_from_plans(
        configuration_manager.network_arch_class_name,
        configuration_manager.network_arch_init_kwargs,
        configuration_manager.network_arch_init_kwargs_req_import,
        determine_num_input_channels(plans_manager, configuration_manager, dataset_json),
        label_manager.num_segmentation_heads,
        allow_init=True,
        deep_supervision=deep_supervision,
    )
