"""Segment a volume with a model package, using nnU-Net's own predictor.

Everything numerical is nnU-Net's: preprocessing (crop to non-zero, normalisation, resampling
to the plans' spacing), the Gaussian-weighted sliding window with optional mirroring (run in
batches of tiles and mirrored copies by :mod:`.sliding_window`, same arithmetic), and the
resampling of logits back to the input grid (nnU-Net's default linear resampling run as PyTorch
ops by :mod:`.torch_resampling`, or nnU-Net's own scipy arithmetic through :mod:`.resampling`
when asked, same arrays without full-volume coordinate grids). This module adds what a
GUI and a command line need around it: progress per batch of tiles, cancelling between
batches, a cheaper retry when memory runs out, input checks with messages a user can act on,
and labels in the input's exact geometry.

The array path follows ``nnUNetPredictor.predict_single_npy_array`` (no worker processes),
with the input converted exactly as nnU-Net's ``SimpleITKIO`` reader converts a file, so the
labels equal nnU-Net's own file-based prediction wherever its logits are not tied to within
floating-point rounding (with ``resampling="nnunet"``: bit for bit at one patch per pass).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import SimpleITK as sitk
import torch

from recokd.device import resolve_device
from recokd.errors import RecokdError
from recokd.inference.backends import Forward, make_forward, resolve_backend
from recokd.inference.image_io import labels_like, volume_array
from recokd.inference.label_map import RESAMPLING_CHOICES, logits_to_labels
from recokd.inference.progress import CancelToken, ProgressCallback, StageProgress, raise_if_cancelled
from recokd.inference.sliding_window import tile_predictor
from recokd.inference.validation import channels_first, check_finite, nnunet_spacing
from recokd.nnunet.network import build_network
from recokd.package.model import ModelPackage

log = logging.getLogger(__name__)

#: nnU-Net readers whose arrays equal SimpleITKIO's for a 3D file (NibabelIO transposes to SimpleITK's
#: axis order and reverses the spacing to match). The ``...WithReorient`` readers turn images to RAS
#: first: a model planned with one expects arrays this predictor does not make, so it is refused.
ARRAY_COMPATIBLE_READERS = ("SimpleITKIO", "NibabelIO")


class StudentPredictor:
    """A loaded model package ready to segment volumes (load once, call many times).

    ``device``: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``. ``mirroring``:
    nnU-Net's test-time mirroring over the package's mirror axes (accurate; off is up to 8x
    faster). ``tile_step``: sliding-window step as a fraction of the patch (0.5 is nnU-Net's
    default; larger is faster and coarser). ``threads``: CPU threads for PyTorch during a call
    (default: PyTorch's setting, restored afterwards) and for the CPU runtimes. ``backend``: the
    runtime of the network's forward pass (:mod:`.backends`): ``"auto"`` (the fastest installed
    on a CPU, PyTorch on a GPU), ``"torch"``, ``"openvino"`` or ``"onnxruntime"``. ``resampling``
    of the logits back to the input grid (:mod:`.label_map`): ``"torch"`` (fast, equal up to
    float32 ties) or ``"nnunet"`` (nnU-Net's scipy arithmetic, bit for bit).
    """

    def __init__(
        self,
        package: ModelPackage,
        device: str | torch.device = "auto",
        mirroring: bool = True,
        tile_step: float = 0.5,
        threads: int | None = None,
        backend: str = "auto",
        resampling: str = "torch",
    ) -> None:
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        from recokd.inference.resampling import BoundedResamplingConfiguration

        if not 0 < tile_step <= 1:
            raise RecokdError(f"Tile step must be in (0, 1], got {tile_step}.")
        if threads is not None and threads < 1:
            raise RecokdError(f"Thread count must be at least 1, got {threads}.")
        if resampling not in RESAMPLING_CHOICES:
            raise RecokdError(f"Unknown resampling {resampling!r}; choose one of {', '.join(RESAMPLING_CHOICES)}.")
        self.package = package
        self.resampling = resampling
        self.threads = threads
        device = resolve_device(str(device))
        plans_manager = PlansManager(package.plans)
        # the configuration as nnU-Net reads it, its default resampling swapped for the memory-bounded equal
        configuration_dict = plans_manager.get_configuration(package.configuration).configuration
        configuration = BoundedResamplingConfiguration(configuration_dict)
        reader = package.plans.get("image_reader_writer", "SimpleITKIO")
        if reader not in ARRAY_COMPATIBLE_READERS:
            raise RecokdError(
                f"The model was planned with nnU-Net's {reader} reader, which reorients images before the network "
                f"sees them; ReCoKD reads images as {' or '.join(ARRAY_COMPATIBLE_READERS)} do, so its labels would be "
                "misplaced. Plan and train the model with SimpleITKIO.")
        if configuration.previous_stage_name is not None:
            raise RecokdError(f"Configuration {package.configuration!r} is a cascade stage; ReCoKD runs single-stage models.")

        network = build_network(package.plans, package.dataset_json, package.configuration)
        try:
            network.load_state_dict(package.state_dict, strict=True)
        except RuntimeError as error:
            detail = " ".join(str(error).split())  # PyTorch lists every mismatch on its own line
            raise RecokdError(
                f"The package's weights do not fit the network its plans describe: {detail[:400]}"
            ) from error
        network.eval()

        self._nnunet = tile_predictor(network, plans_manager, configuration, package.dataset_json, package.mirror_axes,
                                      device, mirroring, tile_step, parameters=[package.state_dict])
        self._preprocessor = configuration.preprocessor_class(verbose=False)
        self.input_channels = determine_num_input_channels(plans_manager, configuration, package.dataset_json)
        self.backend, self._nnunet.forward = self._forward_pass(
            backend, network, (self.input_channels, *configuration.patch_size), device)
        log.info("model %s on %s with %s (mirroring %s, tile step %s)", package.name, device, self.backend,
                 "on" if self.mirroring else "off", tile_step)

    def _forward_pass(self, backend: str, network: torch.nn.Module, input_shape: tuple[int, ...],
                      device: torch.device) -> tuple[str, Forward]:
        """The resolved backend's name and forward pass; ``auto`` falls back to PyTorch when an export fails."""
        chosen = resolve_backend(backend, device)
        try:
            return chosen, make_forward(chosen, network, self.package, input_shape, self.threads)
        except RecokdError as error:
            if backend != "auto":
                raise
            log.warning("%s; using PyTorch instead.", error)
            return "torch", network

    @property
    def device(self) -> torch.device:
        return self._nnunet.device

    @property
    def network(self) -> torch.nn.Module:
        """The network nnU-Net runs (eval mode, the package's weights), e.g. to count parameters."""
        return self._nnunet.network

    @property
    def mirroring(self) -> bool:
        """Whether test-time mirroring is used (off when asked, when the package allows no axes, or after a fallback)."""
        return bool(self._nnunet.use_mirroring and self._nnunet.allowed_mirroring_axes)

    def predict_array(
        self,
        image: np.ndarray,
        spacing: Sequence[float],
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """Labels ``(z, y, x)`` for ``image`` ``(z, y, x)`` or ``(c, z, y, x)`` with ``spacing`` in ITK order ``(x, y, z)``.

        The array axes are those of ``sitk.GetArrayFromImage`` (and of Slicer's
        ``arrayFromVolume``). The labels have the smallest unsigned dtype holding the largest
        label. Raises :class:`RecokdError` for unusable input and :class:`CancelledError` when
        ``cancel`` is set (checked between stages, forward passes and classes).
        """
        report = StageProgress(progress)
        data = channels_first(image, self.input_channels)
        check_finite(data)
        properties = {"spacing": nnunet_spacing(spacing)}
        nnunet = self._nnunet
        with self._torch_threads():
            raise_if_cancelled(cancel)
            report("preprocessing", 0.0, "preprocessing")
            data, _, properties = self._preprocessor.run_case_npy(
                data, None, properties, nnunet.plans_manager, nnunet.configuration_manager, nnunet.dataset_json
            )
            report("preprocessing", 1.0, f"preprocessed to {tuple(data.shape[1:])} voxels")
            raise_if_cancelled(cancel)
            logits = self._predict_logits(torch.from_numpy(data), report, cancel)
            del data
            report("resampling", 0.0, "resampling to the input grid")
            labels = logits_to_labels(
                logits,
                properties,
                nnunet.plans_manager,
                nnunet.configuration_manager,
                nnunet.label_manager,
                cancel=cancel,
                on_class=lambda done, total: report("resampling", done / total, f"class {done}/{total}"),
                resampling=self.resampling,
            )
        return labels

    def predict_image(
        self, image: sitk.Image, progress: ProgressCallback | None = None, cancel: CancelToken | None = None
    ) -> sitk.Image:
        """Labels for a SimpleITK image, in its exact geometry (size, spacing, origin, direction)."""
        array, spacing = volume_array(image)
        return labels_like(self.predict_array(array, spacing, progress, cancel), image)

    def _predict_logits(self, data: torch.Tensor, report: StageProgress, cancel: CancelToken | None) -> torch.Tensor:
        """nnU-Net's sliding window ``(c, z, y, x) -> (classes, z, y, x)``, retried more cheaply on out-of-memory."""
        nnunet = self._nnunet
        last_percent = -1

        def on_tile(done: int, total: int) -> None:
            nonlocal last_percent
            percent = 100 * done // total
            if percent != last_percent:  # at most ~100 events per volume, whatever the tile count
                last_percent = percent
                report("predicting", done / total, f"tile {done}/{total}")

        nnunet.cancel, nnunet.on_tile = cancel, on_tile
        report("predicting", 0.0, "predicting")
        try:
            while True:
                try:
                    return nnunet.predict_sliding_window_return_logits(data).to("cpu")
                except torch.OutOfMemoryError as error:
                    notice = self._fall_back(error)
                    log.warning(notice)
                    report("predicting", 0.0, notice)
        finally:
            nnunet.cancel = nnunet.on_tile = None

    def _fall_back(self, error: torch.OutOfMemoryError) -> str:
        """Make the next attempt cheaper, and keep it so for later calls; returns the notice to show.

        In order: one patch per forward pass (when batching), mirroring off (no flipped copies
        of each tile and its output), result arrays
        in host memory instead of on the GPU (the largest GPU allocation besides the network's
        activations), then the CPU. A larger tile step would not help: every forward pass
        still takes one full patch, and the result arrays are the size of the image.
        """
        from nnunetv2.utilities.helpers import empty_cache

        nnunet = self._nnunet
        empty_cache(nnunet.device)
        if nnunet.samples_per_forward > 1:
            nnunet.samples_per_forward = 1
            return "Out of memory: retrying with one patch per forward pass."
        if self.mirroring:
            nnunet.use_mirroring = False
            return "Out of memory: retrying without test-time mirroring."
        if nnunet.perform_everything_on_device:
            nnunet.perform_everything_on_device = False
            return "Out of memory: retrying with the result arrays in host memory."
        if nnunet.device.type != "cpu":
            nnunet.device = torch.device("cpu")
            nnunet.network.to(nnunet.device)
            return "Out of memory on the GPU: retrying on the CPU (slower)."
        raise RecokdError(
            f"Out of memory even on the CPU without mirroring ({error}). Free memory, "
            "or segment a smaller volume."
        ) from error

    @contextmanager
    def _torch_threads(self) -> Iterator[None]:
        """PyTorch's (process-wide) thread count set to ``threads`` for one call, then restored."""
        if self.threads is None:
            yield
            return
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

