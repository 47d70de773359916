"""The network a package's plans describe, and its weights to and from their stored form.

nnU-Net builds a network from *names* in ``plans.json``: it ``pydoc.locate``\\ s the
architecture class and the ``conv_op``/``norm_op``/``nonlin``/``dropout_op`` arguments and
calls them. In a package those names come from a file someone sent, so
:func:`check_network_spec` allows only ``nn.Module`` classes defined in
``dynamic_network_architectures`` (the network) and in ``torch.nn`` (its operations) before
anything is built. Networks for checking are built on PyTorch's ``meta`` device: shapes
only, no memory, no initialisation cost.

``dynamic_network_architectures`` registers some modules twice (``convs.0.conv`` is also
``convs.0.all_modules.0``), so a state dict names one tensor under several keys. A package
stores each tensor once, under its first key; :func:`unpack_state_dict` restores the other
keys, so the result loads strictly into the network.
"""

from __future__ import annotations

import pydoc

import torch
from torch import nn

from recokd.errors import RecokdError
from recokd.nnunet.network import build_network

NETWORK_MODULE_PREFIX = "dynamic_network_architectures."
OPERATION_MODULE_PREFIX = "torch.nn."


def check_network_spec(plans: dict, configuration: str) -> None:
    """Refuse a plans configuration whose network or operation names leave the allow-list."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    try:
        config = PlansManager(plans).get_configuration(configuration)
        class_name = config.network_arch_class_name
        kwargs = config.network_arch_init_kwargs
        requires_import = config.network_arch_init_kwargs_req_import
    except Exception as error:  # untrusted data: any failure means "not a valid plans file"
        raise RecokdError(f"plans.json has no usable configuration '{configuration}' ({_describe(error)}).") from error
    _require_class(class_name, NETWORK_MODULE_PREFIX, "network class")
    if not isinstance(kwargs, dict) or not isinstance(requires_import, (list, tuple)):
        raise RecokdError(f"plans.json configuration '{configuration}' has a malformed 'architecture' entry.")
    for key in requires_import:
        if not isinstance(key, str) or key not in kwargs:
            raise RecokdError(f"plans.json lists '{key}' under '_kw_requires_import' but sets no such argument.")
        if kwargs[key] is not None:
            _require_class(kwargs[key], OPERATION_MODULE_PREFIX, f"'{key}'")


def network_skeleton(plans: dict, dataset_json: dict, configuration: str) -> nn.Module:
    """The network of ``plans[configuration]`` on the ``meta`` device, after :func:`check_network_spec`."""
    check_network_spec(plans, configuration)
    try:
        with torch.device("meta"):
            return build_network(plans, dataset_json, configuration)
    except Exception as error:  # untrusted data: report, do not crash
        raise RecokdError(
            f"plans.json configuration '{configuration}' with this dataset.json does not describe a network "
            f"nnU-Net can build ({_describe(error)})."
        ) from error


def update_with_state_dict(digest, state_dict: dict[str, torch.Tensor]) -> None:
    """Feed every tensor of ``state_dict`` (name, dtype, shape, bytes; in name order) into a hashlib ``digest``."""
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def alias_map(network: nn.Module) -> dict[str, str]:
    """Every state-dict key of ``network`` -> the first key naming the same tensor."""
    first: dict[int, str] = {}
    return {key: first.setdefault(id(value), key) for key, value in network.state_dict(keep_vars=True).items()}


def pack_state_dict(state_dict: dict[str, torch.Tensor], network: nn.Module) -> dict[str, torch.Tensor]:
    """One contiguous CPU copy per distinct tensor of ``network``, keyed by its first name."""
    packed: dict[str, torch.Tensor] = {}
    for key, canonical in alias_map(network).items():
        if key == canonical:
            packed[key] = state_dict[key].detach().to("cpu").clone().contiguous()
        elif not torch.equal(state_dict[key], state_dict[canonical]):
            raise RecokdError(f"Weights '{key}' and '{canonical}' should be one tensor but differ; the state dict "
                              "is inconsistent. Export from the network's own state_dict().")
    return packed


def unpack_state_dict(tensors: dict[str, torch.Tensor], network: nn.Module) -> dict[str, torch.Tensor]:
    """Check stored tensors against ``network`` (names, shapes, dtypes) and restore aliased keys."""
    aliases = alias_map(network)
    expected = network.state_dict()
    canonical = {key for key, first in aliases.items() if key == first}
    unknown, missing = sorted(set(tensors) - canonical), sorted(canonical - set(tensors))
    if unknown:
        raise RecokdError(f"weights.safetensors holds tensors the network from plans.json has no place for: "
                          f"{_first(unknown)}. The weights do not belong to these plans; re-export the model.")
    if missing:
        raise RecokdError(f"weights.safetensors lacks tensors the network from plans.json needs: {_first(missing)}. "
                          "Re-export the model.")
    for key in sorted(canonical):
        got, want = tensors[key], expected[key]
        if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
            raise RecokdError(
                f"Tensor '{key}' in weights.safetensors is {got.dtype} {tuple(got.shape)} but the network from "
                f"plans.json needs {want.dtype} {tuple(want.shape)}. The weights do not fit these plans; re-export."
            )
    return {key: tensors[first] for key, first in aliases.items()}


def _require_class(name: object, prefix: str, what: str) -> None:
    if not isinstance(name, str) or not name.startswith(prefix):
        raise RecokdError(f"plans.json names {what} {name!r}; only classes from {prefix.rstrip('.')} are allowed "
                          "in a model package.")
    try:
        found = pydoc.locate(name)
    except pydoc.ErrorDuringImport:
        found = None
    if not (isinstance(found, type) and issubclass(found, nn.Module) and found.__module__.startswith(prefix)):
        raise RecokdError(f"plans.json names {what} {name!r}, which is not a network module class of "
                          f"{prefix.rstrip('.')}; refused.")


def _first(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _describe(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
