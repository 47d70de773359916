"""nnU-Net's Gaussian-weighted sliding window, run in batches of tiles and mirrored copies.

nnU-Net runs the network once per tile and once more per mirrored copy, always at batch size 1.
On the CPU that is the slow path for narrow networks: for a 3x3x3 convolution at batch 1,
PyTorch uses oneDNN only when ``channels x depth x height`` of the input exceeds 20480, and
otherwise its reference ``slow_conv3d``. Every layer of a x1/4 student falls below that line
(8 channels x 40 x 56 = 17920 on Hippocampus), so it ran hardly faster than its teacher. Any
batch of two or more takes oneDNN (measured on 1 thread: an 8-channel 40x56x40 convolution
77 ms at batch 1, 8 ms per sample at batch 2).

So the tiles' mirrored copies, and neighbouring tiles, go through the network together. The
arithmetic is otherwise nnU-Net's: the same tiles in the same order, each tile's flipped
predictions summed in nnU-Net's order and averaged, the same Gaussian weights and the same
half-precision accumulators; logits agree with nnU-Net's to floating-point rounding.

Between batches the predictor checks for cancellation and reports the tiles done; there is no
producer thread (nnU-Net's overlaps host-to-device copies), so a stop never strands one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

from recokd.errors import RecokdError
from recokd.inference.progress import CancelToken, raise_if_cancelled

# Per-sample time of the x1/4 Hippocampus student on 1 CPU thread was 94-103 ms at 2 samples per
# pass, 84-89 ms at 4 and 106-112 ms at 8 (larger batches leave the cache), so 4 it is.
MAX_SAMPLES_PER_FORWARD = 4
FORWARD_MEMORY_BUDGET = 1 << 30  # bytes of activations per forward pass the batch size aims for
ACTIVATIONS_PER_VOXEL = 6  # live first-stage feature maps during a forward pass, in units of its width


def samples_per_forward(patch_size: Sequence[int], first_stage_features: int, output_channels: int,
                        budget_bytes: int = FORWARD_MEMORY_BUDGET) -> int:
    """How many patches (tiles x mirrored copies) one forward pass takes: 1 to 4, within ``budget_bytes``.

    A patch's peak float32 activation memory is estimated from the full-resolution stage: the
    skip connection, the convolution's input and output and the decoder's concatenation hold
    about ``ACTIVATIONS_PER_VOXEL x first_stage_features`` values per voxel, plus the output.
    """
    voxels = 1
    for size in patch_size:
        voxels *= int(size)
    per_sample = 4 * voxels * (ACTIVATIONS_PER_VOXEL * first_stage_features + output_channels)
    return max(1, min(MAX_SAMPLES_PER_FORWARD, budget_bytes // per_sample))


def mirror_combinations(mirror_axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    """Axes of a ``(c, *spatial)`` tile to flip for each copy, identity first, in nnU-Net's order."""
    if not mirror_axes:
        return [()]
    axes = [axis + 1 for axis in mirror_axes]
    return [()] + [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]


def tile_predictor(network: torch.nn.Module, plans_manager, configuration, dataset_json: dict,
                   mirror_axes: Sequence[int] | None, device: torch.device, mirroring: bool = True,
                   tile_step: float = 0.5, parameters: list | None = None):
    """nnU-Net's predictor with the batched sliding window, ready to predict with ``network``.

    ``network`` is in eval mode with its weights loaded; ``plans_manager`` and ``configuration``
    are nnU-Net's managers of its plans. The batch size comes from :func:`samples_per_forward`;
    the result arrays stay on the device when it is a GPU. ``parameters`` are the weights nnU-Net
    keeps for its own ensembling (None when nothing reloads them).
    """
    import io
    from contextlib import redirect_stdout

    with redirect_stdout(io.StringIO()):  # nnU-Net prints an on-device warning for every non-CUDA device
        predictor = batched_tile_predictor_class()(
            tile_step_size=tile_step, use_gaussian=True, use_mirroring=mirroring,
            perform_everything_on_device=device.type == "cuda", device=device, verbose=False, allow_tqdm=False)
    predictor.manual_initialization(network, plans_manager, configuration, parameters, dataset_json, "nnUNetTrainer",
                                    tuple(mirror_axes) if mirror_axes else None)
    predictor.samples_per_forward = samples_per_forward(
        configuration.patch_size, configuration.network_arch_init_kwargs["features_per_stage"][0],
        predictor.label_manager.num_segmentation_heads)
    return predictor


def batched_tile_predictor_class():
    """nnU-Net's predictor with the batched sliding window (built lazily: nnU-Net is imported on first use)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian
    from nnunetv2.utilities.helpers import empty_cache

    class BatchedTilePredictor(nnUNetPredictor):
        """Set ``samples_per_forward``, and optionally ``forward`` (another runtime's forward pass, see
        :mod:`recokd.inference.backends`), ``cancel`` and ``on_tile(done, total)``, before predicting."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.samples_per_forward = 1
            self.forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # None: self.network
            self.cancel: CancelToken | None = None
            self.on_tile: Callable[[int, int], None] | None = None

        @torch.inference_mode()
        def _internal_predict_sliding_window_return_logits(self, data: torch.Tensor, slicers: Sequence,
                                                           do_on_device: bool = True) -> torch.Tensor:
            """``data`` ``(c, z, y, x)`` (padded to at least a patch) -> logits ``(heads, z, y, x)`` in float16."""
            results_device = self.device if do_on_device else torch.device("cpu")
            empty_cache(self.device)
            data = data.to(results_device)
            heads = self.label_manager.num_segmentation_heads
            logits = torch.zeros((heads, *data.shape[1:]), dtype=torch.half, device=results_device)
            weights = torch.zeros(data.shape[1:], dtype=torch.half, device=results_device)
            gaussian = (compute_gaussian(tuple(self.configuration_manager.patch_size), sigma_scale=1. / 8,
                                         value_scaling_factor=10, device=results_device)
                        if self.use_gaussian else 1)
            try:
                self._accumulate(data, slicers, logits, weights, gaussian)
            except BaseException:
                # Free the result arrays now, not when the caller drops the traceback: nnU-Net retries
                # with host result arrays after a GPU out-of-memory error while still handling it.
                del logits, weights, data
                empty_cache(self.device)
                raise
            torch.div(logits, weights, out=logits)
            if torch.isinf(logits).any():
                raise RecokdError("The prediction overflowed float16 (infinite logits); the model's outputs are "
                                  "out of range for nnU-Net's accumulation.")
            return logits

        def _accumulate(self, data: torch.Tensor, slicers: Sequence, logits: torch.Tensor, weights: torch.Tensor,
                        gaussian) -> None:
            """Add every tile's Gaussian-weighted mean prediction into ``logits`` and its weight into ``weights``."""
            flips = mirror_combinations(self.allowed_mirroring_axes if self.use_mirroring else None)
            tiles_per_batch = max(1, self.samples_per_forward // len(flips))
            for start in range(0, len(slicers), tiles_per_batch):
                raise_if_cancelled(self.cancel)
                batch = slicers[start:start + tiles_per_batch]
                for tile_slicer, prediction in zip(batch, self._predict_tiles(data, batch, flips), strict=True):
                    prediction = prediction.to(logits.device)
                    if self.use_gaussian:
                        prediction *= gaussian
                    logits[tile_slicer] += prediction
                    weights[tile_slicer[1:]] += gaussian
                if self.on_tile is not None:
                    self.on_tile(start + len(batch), len(slicers))

        def _predict_tiles(self, data: torch.Tensor, slicers: Sequence, flips: list[tuple[int, ...]]) -> list:
            """Mean over ``flips`` of the network's flipped-back output, ``(heads, *patch)`` per tile in ``slicers``.

            Samples are ordered copy by copy, tile by tile, and cut into forward passes of at
            most ``samples_per_forward``; each tile's sum grows in nnU-Net's order.
            """
            tiles = torch.stack([data[s] for s in slicers]).to(self.device)  # (tiles, c, *patch)
            samples = [(index, axes) for axes in flips for index in range(len(slicers))]
            sums: list[torch.Tensor | None] = [None] * len(slicers)
            forward = self.forward or self.network
            for start in range(0, len(samples), self.samples_per_forward):
                part = samples[start:start + self.samples_per_forward]
                raise_if_cancelled(self.cancel)
                outputs = forward(torch.stack([tiles[i].flip(axes) if axes else tiles[i] for i, axes in part]))
                for (index, axes), output in zip(part, outputs, strict=True):
                    output = output.flip(axes) if axes else output
                    if sums[index] is None:
                        sums[index] = output.clone()
                    else:
                        sums[index] += output
            return [total / len(flips) for total in sums]

    return BatchedTilePredictor
