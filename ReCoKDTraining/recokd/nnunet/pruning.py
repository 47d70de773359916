"""Structured width pruning of an nnU-Net teacher into its narrower student.

Per channel space (:mod:`recokd.nnunet.channel_spaces`) the student keeps the ``C'`` teacher
channels of highest importance and every layer is sliced with those indices, so the student
starts as a sub-network of the teacher (Minitron: Muralidharan et al., "Compact Language
Models via Pruning and Knowledge Distillation", arXiv 2407.14679: prune by importance,
inherit the weights, then distil). Two importance scores:

* ``"activation"`` (Minitron scores channels by their activations on calibration data): the
  spread of each channel over a calibration batch of training patches, its standard deviation
  over the voxels of a patch summed over patches, read where the next layer reads it (after
  norm and non-linearity; for a residual stream, after each block's addition). A channel that
  is nearly constant over a patch carries nothing the next layer could not get from its bias,
  however large its mean, which Minitron's mean magnitude would keep (in a pilot on the
  Hippocampus teacher, mean magnitude left refitted ×1/4 students far below the spread);
* ``"gamma"``: ``|gamma|`` of the norm layers over the space (summed over the norms of a
  residual stream); a transposed convolution has no norm and is scored by the L2 norm of
  each output channel's weights.

Kept indices stay in ascending order, so at width 1 the student is the teacher exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import nn

from recokd.distill.options import IMPORTANCE_CHOICES
from recokd.errors import RecokdError
from recokd.nnunet.channel_spaces import UNPRUNED, ChannelStructure, Layer, channel_structure

Importance = Literal["activation", "gamma"]
Selection = dict[str, torch.Tensor]  # space -> kept teacher channel indices (ascending, int64)


def matching_structures(teacher: nn.Module, student: nn.Module) -> tuple[ChannelStructure, ChannelStructure]:
    """Both networks' structures; they must have the same layers and spaces (sizes may differ)."""
    teacher_structure, student_structure = channel_structure(teacher), channel_structure(student)
    if teacher_structure.layers != student_structure.layers:
        differing = next((t, s) for t, s in zip(teacher_structure.layers + [None], student_structure.layers + [None])
                         if t != s)
        raise RecokdError(
            f"The student's layers differ from the teacher's (teacher {differing[0]}, student {differing[1]}): "
            "inheritance needs a student built from plans derived from the teacher's. With the channel floor "
            "of 8 a residual block can lose its shortcut projection; use --init random or a wider student.")
    for name in UNPRUNED:
        if student_structure.spaces[name].size != teacher_structure.spaces[name].size:
            raise RecokdError(f"The student has {student_structure.spaces[name].size} {name} channels, the teacher "
                              f"{teacher_structure.spaces[name].size}: they must learn the same task.")
    for name, space in student_structure.spaces.items():
        if space.size > teacher_structure.spaces[name].size:
            raise RecokdError(f"Student space {name} has {space.size} channels, more than the teacher's "
                              f"{teacher_structure.spaces[name].size}.")
    return teacher_structure, student_structure


@torch.no_grad()
def activation_importance(teacher: nn.Module, structure: ChannelStructure,
                          batches: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per channel of every prunable space: its standard deviation over a patch's voxels, summed over patches.

    ``batches`` are ``(b, C_in, *patch)`` tensors. Returns ``{space: (C_space,) float64}``; a
    space read at several places (a residual stream after each block) sums its places.
    """
    scores = {name: torch.zeros(structure.spaces[name].size, dtype=torch.float64)
              for name in structure.prunable_spaces()}
    handles = []
    for name in structure.prunable_spaces():
        for producer in structure.spaces[name].producers:
            def record(module, args, output, name=name):
                spatial = list(range(2, output.ndim))
                scores[name] += output.detach().double().std(dim=spatial).sum(0).cpu()
            handles.append(teacher.get_submodule(producer).register_forward_hook(record))
    try:
        for batch in batches:
            teacher(batch)
    finally:
        for handle in handles:
            handle.remove()
    return scores


def gamma_importance(teacher: nn.Module, structure: ChannelStructure) -> dict[str, torch.Tensor]:
    """``|gamma|`` of the norms over each space (weight L2 norm where the space has no norm)."""
    scores = {}
    for name in structure.prunable_spaces():
        space = structure.spaces[name]
        if space.norms:
            scores[name] = sum(teacher.get_submodule(n).weight.detach().abs().double().cpu() for n in space.norms)
        else:
            writer = next(layer for layer in structure.layers if layer.out == name)
            weight = teacher.get_submodule(writer.name).weight.detach().double().cpu()
            out_dim = 1 if writer.kind == "transposed" else 0
            scores[name] = weight.transpose(0, out_dim).flatten(1).norm(dim=1)
    return scores


def select_channels(scores: Mapping[str, torch.Tensor], student_structure: ChannelStructure) -> Selection:
    """The ``C'`` highest-scoring teacher channels of every space, ascending (ties: lower index first)."""
    selection = {}
    for name, space in student_structure.spaces.items():
        if name not in scores:  # input and logits: all channels
            selection[name] = torch.arange(space.size)
            continue
        order = torch.argsort(-scores[name], stable=True)
        selection[name] = torch.sort(order[: space.size]).values
    return selection


def input_indices(layer: Layer, selection: Selection, teacher_structure: ChannelStructure) -> torch.Tensor:
    """Teacher input-channel indices a layer keeps: its input spaces' selections, concatenated with offsets."""
    parts, offset = [], 0
    for space in layer.inputs:
        parts.append(selection[space] + offset)
        offset += teacher_structure.spaces[space].size
    return torch.cat(parts)


@torch.no_grad()
def slice_into(teacher: nn.Module, student: nn.Module, structure: ChannelStructure, selection: Selection) -> None:
    """Copy the teacher's weights at the selected channels into every layer of the student."""
    for layer in structure.layers:
        source, target = teacher.get_submodule(layer.name), student.get_submodule(layer.name)
        out = selection[layer.out]
        if layer.kind == "norm":
            tensors = [(getattr(source, k), getattr(target, k)) for k in ("weight", "bias", "running_mean", "running_var")]
            for src, dst in tensors:
                if src is not None and dst is not None:
                    dst.copy_(src[out.to(src.device)])
            continue
        inputs = input_indices(layer, selection, structure).to(source.weight.device)
        out = out.to(source.weight.device)
        weight = source.weight.index_select(0, inputs).index_select(1, out) if layer.kind == "transposed" \
            else source.weight.index_select(0, out).index_select(1, inputs)
        _copy_checked(target.weight, weight, layer.name)
        if target.bias is not None:
            _copy_checked(target.bias, source.bias[out], layer.name)


def _copy_checked(destination: torch.Tensor, source: torch.Tensor, name: str) -> None:
    if destination.shape != source.shape:
        raise RecokdError(f"{name}: sliced teacher weights {tuple(source.shape)} do not fit the student's "
                          f"{tuple(destination.shape)}.")
    destination.copy_(source)


def prune_teacher_into(teacher: nn.Module, student: nn.Module, importance: Importance = "activation",
                       batches: Sequence[torch.Tensor] = ()) -> tuple[Selection, ChannelStructure]:
    """Initialise ``student`` as the teacher's most important sub-network; returns the selection used.

    Args:
        teacher: the trained network (any device), in eval mode.
        student: the same architecture with fewer channels per stage, on the teacher's device.
        importance: ``"activation"`` (needs ``batch``) or ``"gamma"``.
        batches: calibration patches, ``(b, C_in, *patch)`` tensors on the teacher's device.
    """
    if importance not in IMPORTANCE_CHOICES:
        raise RecokdError(f"Unknown channel importance '{importance}'; choose {' or '.join(IMPORTANCE_CHOICES)}.")
    teacher_structure, student_structure = matching_structures(teacher, student)
    if importance == "activation":
        if not batches:
            raise RecokdError("Activation importance needs a calibration batch of training patches.")
        scores = activation_importance(teacher, teacher_structure, batches)
    else:
        scores = gamma_importance(teacher, teacher_structure)
    selection = select_channels(scores, student_structure)
    slice_into(teacher, student, teacher_structure, selection)
    return selection, teacher_structure
