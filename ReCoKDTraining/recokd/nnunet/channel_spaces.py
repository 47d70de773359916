"""Which channels of an nnU-Net U-Net must be pruned together: its channel spaces and layers.

Structured width pruning removes whole channels. A channel produced by one layer is read by
others (the next convolution, the decoder's concatenation, a residual addition), so a choice
of channels is made per *channel space*, the set of feature maps that share one channel
index, and every layer that writes or reads the space is sliced with the same indices.

Spaces of a ``dynamic_network_architectures`` U-Net (``PlainConvUNet``, ``ResidualEncoderUNet``):

* every convolution of a plain encoder or decoder stage writes a space of its own (its norm
  and non-linearity act per channel), read by the next convolution;
* a residual stage is one space (its *stream*): each block adds its last convolution to its
  input, so block outputs, the shortcut projection and the stage's input (when a block has no
  projection) share indices; a block's inner convolutions write spaces of their own;
* each transposed convolution of the decoder writes a space; the decoder stage reads the
  concatenation ``[upsampled, encoder skip]``, two spaces side by side;
* the segmentation heads write class logits, which are never pruned, and the network input
  is never pruned.

:func:`channel_structure` reads this off the modules, so the teacher and its narrower
student (built from plans that differ only in ``features_per_stage``) give the same
structure with different sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from recokd.errors import RecokdError

INPUT = "input"  # the network's input channels: never pruned
LOGITS = "logits"  # class outputs of the segmentation heads: never pruned
UNPRUNED = (INPUT, LOGITS)


@dataclass(frozen=True)
class Layer:
    """One parameterised module and the spaces it reads and writes.

    Attributes:
        name: module path in the network (``network.get_submodule(name)``).
        kind: ``"conv"`` (weight ``(out, in, *k)``), ``"transposed"`` (weight ``(in, out, *k)``)
            or ``"norm"`` (per-channel affine and statistics of ``out``).
        out: the space its output channels belong to.
        inputs: the spaces of its input channels, concatenated in this order (empty for a norm).
    """

    name: str
    kind: Literal["conv", "transposed", "norm"]
    out: str
    inputs: tuple[str, ...] = ()


@dataclass
class Space:
    """A set of channels chosen together.

    Attributes:
        size: number of channels in this network.
        producers: modules whose *output* is this space after its norm and non-linearity
            (what the next layer reads); activation importance is measured there.
        norms: the norm layers over this space (``|gamma|`` importance).
    """

    size: int
    producers: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)


@dataclass
class ChannelStructure:
    """The spaces and the layers (in execution order) of one network.

    ``stage_outputs[k]`` is the space of encoder stage ``k``'s output (what ReCo-KD distils).
    """

    spaces: dict[str, Space] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list)
    stage_outputs: list[str] = field(default_factory=list)

    def prunable_spaces(self) -> list[str]:
        return [name for name in self.spaces if name not in UNPRUNED]

    def _add_space(self, name: str, size: int) -> str:
        self.spaces[name] = Space(size)
        return name

    def _conv_unit(self, unit: nn.Module, name: str, inputs: tuple[str, ...], out: str | None = None) -> str:
        """A ``ConvDropoutNormReLU`` at ``name``: its conv and norm. Returns the space it writes."""
        out = out or self._add_space(name, unit.conv.out_channels)
        self.layers.append(Layer(f"{name}.conv", "conv", out, inputs))
        if getattr(unit, "norm", None) is not None:
            self.layers.append(Layer(f"{name}.norm", "norm", out))
            self.spaces[out].norms.append(f"{name}.norm")
        return out

    def _plain_blocks(self, blocks: nn.Module, name: str, inputs: tuple[str, ...]) -> str:
        """``StackedConvBlocks``: a chain of conv units; returns the last one's space."""
        for i, unit in enumerate(blocks.convs):
            space = self._conv_unit(unit, f"{name}.convs.{i}", inputs)
            self.spaces[space].producers.append(f"{name}.convs.{i}")
            inputs = (space,)
        return inputs[0]

    def _residual_block(self, block: nn.Module, name: str, stream_in: str) -> str:
        """``BasicBlockD`` / ``BottleneckD``: inner convs, then the stream it adds to. Returns the stream."""
        if getattr(block, "apply_se", False):
            raise RecokdError(f"{name} uses squeeze-and-excitation, which teacher inheritance does not support; "
                              "use --init random.")
        projection = [m for m in block.skip if hasattr(m, "conv")] if isinstance(block.skip, nn.Sequential) else []
        stream = self._add_space(name, block.output_channels) if projection else stream_in
        convs = [block.conv1, block.conv2] + ([block.conv3] if hasattr(block, "conv3") else [])
        inputs = (stream_in,)
        for i, unit in enumerate(convs, start=1):
            last = i == len(convs)
            space = self._conv_unit(unit, f"{name}.conv{i}", inputs, out=stream if last else None)
            if not last:
                self.spaces[space].producers.append(f"{name}.conv{i}")
            inputs = (space,)
        if projection:
            index = list(block.skip).index(projection[0])
            self._conv_unit(projection[0], f"{name}.skip.{index}", (stream_in,), out=stream)
        self.spaces[stream].producers.append(name)
        return stream

    def _encoder_stage(self, module: nn.Module, name: str, stream_in: str) -> str:
        """An encoder stage or a part of one (a pooling layer is skipped); returns the space of its output."""
        if hasattr(module, "convs"):
            return self._plain_blocks(module, name, (stream_in,))
        if hasattr(module, "blocks"):
            for i, block in enumerate(module.blocks):
                stream_in = self._residual_block(block, f"{name}.blocks.{i}", stream_in)
            return stream_in
        if isinstance(module, nn.Sequential):
            for child_name, child in module.named_children():
                stream_in = self._encoder_stage(child, f"{name}.{child_name}", stream_in)
            return stream_in
        if any(p.numel() for p in module.parameters()):
            raise RecokdError(f"{name} ({type(module).__name__}) is not a layer teacher inheritance knows.")
        return stream_in


def channel_structure(network: nn.Module) -> ChannelStructure:
    """The channel spaces and layers of an nnU-Net U-Net, layers in execution order.

    Raises:
        RecokdError: the network is not a ``dynamic_network_architectures`` U-Net with a
            ``UNetDecoder`` (encoder stages, transposed convolutions, decoder stages, heads).
    """
    encoder, decoder = getattr(network, "encoder", None), getattr(network, "decoder", None)
    if not all(hasattr(module, attr) for module, attr in ((encoder, "stages"), (decoder, "transpconvs"),
                                                          (decoder, "seg_layers"))):
        raise RecokdError(f"{type(network).__name__} is not an nnU-Net U-Net (encoder.stages, decoder.transpconvs, "
                          "decoder.seg_layers); teacher inheritance supports PlainConvUNet and ResidualEncoderUNet.")
    structure = ChannelStructure()
    structure.spaces[INPUT] = Space(_first_conv(network).in_channels)
    structure.spaces[LOGITS] = Space(decoder.seg_layers[-1].out_channels)
    stream = INPUT
    if getattr(encoder, "stem", None) is not None:
        stream = structure._plain_blocks(encoder.stem, "encoder.stem", (INPUT,))
    for s, stage in enumerate(encoder.stages):
        stream = structure._encoder_stage(stage, f"encoder.stages.{s}", stream)
        structure.stage_outputs.append(stream)
    skips = structure.stage_outputs
    below = skips[-1]
    for s, transposed in enumerate(decoder.transpconvs):
        name = f"decoder.transpconvs.{s}"
        up = structure._add_space(name, transposed.out_channels)
        structure.spaces[up].producers.append(name)
        structure.layers.append(Layer(name, "transposed", up, (below,)))
        below = structure._plain_blocks(decoder.stages[s], f"decoder.stages.{s}", (up, skips[-(s + 2)]))
        structure.layers.append(Layer(f"decoder.seg_layers.{s}", "conv", LOGITS, (below,)))
    return structure


def _first_conv(network: nn.Module) -> nn.Module:
    for module in network.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return module
    raise RecokdError(f"{type(network).__name__} has no convolution.")
