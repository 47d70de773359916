"""Refit a pruned student layer by layer so each layer reproduces the teacher's output.

Slicing a teacher keeps its weights but not its function: the kept channels of a layer were
computed from *all* the teacher's input channels, and at a quarter of the width most of them
are gone. Channel-pruning work fixes this by reconstruction: each layer's weights are re-solved
by linear least squares so that, fed the pruned network's own input, it reproduces the
original layer's output at the kept channels (He, Zhang and Sun, "Channel Pruning for
Accelerating Very Deep Neural Networks", ICCV 2017; Luo, Wu and Lin, "ThiNet", ICCV 2017).

Here every convolution and transposed convolution the teacher runs is refitted in execution
order on a calibration batch: the target is the teacher's pre-norm output at the kept
channels (at the final segmentation head: the teacher's logits), the input is the student's
actual input at that layer, so errors of earlier layers are compensated rather than
accumulated. Norms keep their sliced affine parameters. The solve is ridge-regularised
towards the sliced weights, so directions the calibration data does not excite keep the
teacher's values. Voxels are sampled (``samples`` output positions per layer), which bounds
memory for any patch size; the normal equations are accumulated in float64.

The samples are stratified by the class the teacher predicts there (its segmentation resized
to the layer's grid, nearest neighbour): each class present gets an equal share. Sampled
uniformly, a least-squares fit is a fit of the background (in a pilot on Hippocampus patches
the refitted ×1/4 student then missed the smaller structure entirely before training).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recokd.nnunet.channel_spaces import ChannelStructure
from recokd.nnunet.pruning import Selection

log = logging.getLogger(__name__)

CHUNK = 4096  # positions per im2col chunk: bounds the feature matrix at CHUNK x (C_in * kernel volume)


@dataclass(frozen=True)
class LayerFit:
    """How well one refitted layer reproduces the teacher: error / variance of the target, before and after."""

    name: str
    error_sliced: float
    error_refitted: float


@torch.no_grad()
def reconstruct(teacher: nn.Module, student: nn.Module, structure: ChannelStructure, selection: Selection,
                batches: Sequence[torch.Tensor], samples: int = 16384, ridge: float = 1e-3,
                seed: int = 0) -> list[LayerFit]:
    """Refit the student's convolutions in execution order; returns the fit of each layer.

    The teacher runs once per batch (its targets are sampled and kept); the student runs once
    over all batches together: a pre-hook on each layer solves its weights from the input it
    is about to see, so every later layer already sees the refitted earlier ones.

    Args:
        teacher: the trained network (eval mode).
        student: the teacher sliced at ``selection`` (:func:`recokd.nnunet.pruning.prune_teacher_into`).
        structure: the teacher's channel structure.
        selection: kept teacher channels per space.
        batches: calibration patches, ``(b, C_in, *patch)`` tensors on the networks' device.
        samples: output positions sampled per layer (spread over the batches).
        ridge: regularisation, relative to the mean diagonal of ``X^T X``, towards the sliced weights.
        seed: seed of the position sampling.
    """
    generator = torch.Generator().manual_seed(seed)
    per_batch = max(1, samples // len(batches))
    targets: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    offset = 0
    for batch in batches:
        for name, (positions, target) in _teacher_targets(teacher, structure, selection, batch, per_batch,
                                                          generator).items():
            positions[:, 0] += offset
            targets.setdefault(name, []).append((positions, target))
        offset += len(batch)
    fits: list[LayerFit] = []
    handles = []
    for layer in structure.layers:
        if layer.name in targets:
            positions = torch.cat([p for p, _ in targets[layer.name]])
            target = torch.cat([t for _, t in targets[layer.name]])

            def refit(module, args, layer=layer, positions=positions, target=target):
                fits.append(_refit_layer(module, layer.name, args[0], positions, target, ridge))
            handles.append(student.get_submodule(layer.name).register_forward_pre_hook(refit))
    was_training = student.training
    student.eval()
    try:
        student(torch.cat(list(batches)))
    finally:
        student.train(was_training)
        for handle in handles:
            handle.remove()
    return fits


def _teacher_targets(teacher: nn.Module, structure: ChannelStructure, selection: Selection, batch: torch.Tensor,
                     samples: int, generator: torch.Generator) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per refittable layer the teacher runs: sampled output positions ``(n, 1 + dims)`` and outputs ``(n, C')``.

    Two teacher passes: the first gives its segmentation (the sampling strata), the second the layer outputs.
    """
    targets, handles = {}, []
    logits = teacher(batch)
    predicted = (logits[0] if isinstance(logits, (list, tuple)) else logits).argmax(1, keepdim=True).float()
    for layer in structure.layers:
        if layer.kind == "norm" or not _refittable(teacher.get_submodule(layer.name)):
            continue

        def record(module, args, output, layer=layer):
            strata = F.interpolate(predicted, size=output.shape[2:], mode="nearest")[:, 0].long()
            positions = _sample_positions(output.shape, samples, generator, strata).to(output.device)
            kept = output[(positions[:, 0], slice(None), *positions[:, 1:].T)]
            targets[layer.name] = (positions, kept[:, selection[layer.out].to(kept.device)].double())
        handles.append(teacher.get_submodule(layer.name).register_forward_hook(record))
    try:
        teacher(batch)
    finally:
        for handle in handles:
            handle.remove()
    return targets


def _refittable(module: nn.Module) -> bool:
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return module.kernel_size == module.stride and not any(module.padding)
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1 and set(module.dilation) == {1} \
        and module.padding_mode == "zeros"


def _sample_positions(shape: torch.Size, samples: int, generator: torch.Generator,
                      strata: torch.Tensor) -> torch.Tensor:
    """About ``samples`` distinct positions of an output ``(B, C, *spatial)``: rows ``(b, *index)``.

    ``strata`` ``(B, *spatial)`` is the teacher's predicted class on this grid: each class
    present gets an equal share (all its positions if it has fewer), so a structure of a few
    hundred voxels weighs in the fit as much as the background around it.
    """
    labels = strata.flatten().cpu()
    present = labels.unique()
    share = max(1, samples // len(present))
    flat = torch.cat([members[torch.randperm(len(members), generator=generator)[:share]]
                      for members in (torch.nonzero(labels == c).flatten() for c in present)])
    return torch.stack(torch.unravel_index(flat, (shape[0], *shape[2:])), dim=1)


def _refit_layer(module: nn.Module, name: str, features: torch.Tensor, positions: torch.Tensor, target: torch.Tensor,
                 ridge: float) -> LayerFit:
    """Solve one layer's weights from the input it is about to see and the teacher's outputs; set them."""
    gram = cross = 0.0
    for start in range(0, len(positions), CHUNK):
        x = _design_matrix(module, features, positions[start:start + CHUNK])  # float32 products, float64 sums
        gram = gram + (x.T @ x).double()
        cross = cross + x.double().T @ target[start:start + CHUNK]
    initial = _flat_weights(module).double()  # (F, C_out), bias last when present
    variance = float(((target - target.mean(0)) ** 2).sum()) or 1.0
    squared = float((target**2).sum())
    regulariser = ridge * float(gram.diagonal().mean()) or ridge
    solved = torch.linalg.solve(gram + regulariser * torch.eye(len(gram), dtype=gram.dtype, device=gram.device),
                                cross + regulariser * initial)
    fit = LayerFit(name, _residual(gram, cross, squared, initial) / variance,
                   _residual(gram, cross, squared, solved) / variance)
    _set_flat_weights(module, solved.to(module.weight.dtype))
    log.debug("refit %s: error %.3g -> %.3g", fit.name, fit.error_sliced, fit.error_refitted)
    return fit


def _residual(gram: torch.Tensor, cross: torch.Tensor, squared: float, weights: torch.Tensor) -> float:
    """``||X W - Y||^2`` from the normal equations: ``tr(W^T G W) - 2 tr(W^T X^T Y) + ||Y||^2``."""
    return float((weights * (gram @ weights)).sum() - 2 * (weights * cross).sum()) + squared


def _design_matrix(module: nn.Module, features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The inputs each sampled output position of ``module`` sees, ``(n, C_in * kernel [+ 1 for the bias])``."""
    batch_index, index = positions[:, 0], positions[:, 1:]
    kernel = module.kernel_size
    if isinstance(module, nn.modules.conv._ConvTransposeNd):  # kernel == stride: one input voxel, one kernel offset
        stride = torch.tensor(module.stride, device=positions.device)
        source = features[(batch_index, slice(None), *(index // stride).T)]  # (n, C_in)
        offset = torch.zeros(len(positions), dtype=torch.long, device=positions.device)
        for size, o in zip(kernel, (index % stride).T):
            offset = offset * size + o
        volume = int(torch.tensor(kernel).prod())
        x = torch.zeros(len(positions), source.shape[1], volume, dtype=features.dtype, device=features.device)
        x[torch.arange(len(positions)), :, offset] = source
    else:
        padded = F.pad(features, [p for pad in reversed(module.padding) for p in (pad, pad)])
        windows = padded
        for dim, (size, step) in enumerate(zip(kernel, module.stride)):
            windows = windows.unfold(2 + dim, size, step)  # (B, C, *out, *kernel)
        x = windows[(batch_index, slice(None), *index.T)]  # (n, C_in, *kernel)
    x = x.flatten(1)
    if module.bias is not None:
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], dim=1)
    return x


def _flat_weights(module: nn.Module) -> torch.Tensor:
    """The layer as a matrix ``(C_in * kernel [+ 1], C_out)`` matching :func:`_design_matrix`."""
    weight = module.weight
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        weight = weight.transpose(0, 1)  # (C_out, C_in, *kernel)
    flat = weight.flatten(1).T
    return torch.cat([flat, module.bias[None]], dim=0) if module.bias is not None else flat


def _set_flat_weights(module: nn.Module, flat: torch.Tensor) -> None:
    if module.bias is not None:
        module.bias.copy_(flat[-1])
        flat = flat[:-1]
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        shape = (module.weight.shape[1], module.weight.shape[0], *module.weight.shape[2:])
        module.weight.copy_(flat.T.reshape(shape).transpose(0, 1))
    else:
        module.weight.copy_(flat.T.reshape(module.weight.shape))
