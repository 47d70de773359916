"""Which runtime executes the network's forward pass: PyTorch, OpenVINO or ONNX Runtime.

Only the network call changes: nnU-Net's preprocessing, sliding window, Gaussian weighting,
mirroring and resampling stay in PyTorch/NumPy whatever the backend. A backend is a callable
``(n, c, *patch) float32 tensor -> (n, heads, *patch) float32 tensor``.

On a laptop CPU the network is most of the time: for a x1/4 CT-plan student (128^3 patch,
2 threads) OpenVINO's forward pass measured 2.6x faster than PyTorch eager and ONNX Runtime
1.9x (``benchmarks/results/cpu_runtime.json``; ``benchmarks/cpu_runtime.py`` measures it on the
machine at hand). ``auto`` takes the fastest one installed on a CPU (OpenVINO, then ONNX
Runtime, then PyTorch) and PyTorch on a GPU. OpenVINO runs in float32 (``INFERENCE_PRECISION_HINT``): on CPUs with bfloat16 units its
default would be bfloat16, faster but no longer the network the package describes.

Both runtimes read the ONNX export of the package's network (:mod:`.export_cache`): exported
once per package, with a dynamic batch axis so that tiles and mirrored copies still go
through in batches.

The runtimes' own out-of-memory failures are raised as :class:`torch.OutOfMemoryError`, so
the predictor's cheaper-retry ladder works with every backend.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from recokd.errors import RecokdError

if TYPE_CHECKING:
    from recokd.package.model import ModelPackage

log = logging.getLogger(__name__)

BACKEND_CHOICES = ("auto", "torch", "openvino", "onnxruntime")
CPU_PREFERENCE = ("openvino", "onnxruntime", "torch")  # fastest first, as measured on 2-core CPUs
INSTALL_HINT = {"openvino": "pip install 'recokd[openvino]'", "onnxruntime": "pip install 'recokd[onnxruntime]'"}
_MEMORY_WORDS = ("bad_alloc", "out of memory", "failed to allocate", "cannot allocate")

Forward = Callable[[torch.Tensor], torch.Tensor]


def installed_backends() -> list[str]:
    """The backends this environment can run, in :data:`CPU_PREFERENCE` order (torch always).

    A backend's name is the name of its Python module.
    """
    return [name for name in CPU_PREFERENCE if name == "torch" or importlib.util.find_spec(name)]


def resolve_backend(name: str, device: torch.device) -> str:
    """``auto`` -> the fastest installed on a CPU, ``torch`` on a GPU; an explicit choice is checked."""
    if name not in BACKEND_CHOICES:
        raise RecokdError(f"Unknown backend {name!r}; use one of {', '.join(BACKEND_CHOICES)}.")
    if name == "auto":
        return installed_backends()[0] if device.type == "cpu" else "torch"
    if name != "torch" and device.type != "cpu":
        raise RecokdError(f"The {name} backend runs on the CPU; use --device cpu, or --backend torch on {device}.")
    if name not in installed_backends():
        raise RecokdError(f"The {name} backend is not installed here ({INSTALL_HINT[name]}).")
    return name


class OpenVINOForward:
    """The ONNX network compiled by OpenVINO for the CPU, in float32, on ``threads`` threads (None: its default)."""

    def __init__(self, onnx_path: Path, threads: int | None) -> None:
        import openvino

        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        with _memory_errors("OpenVINO"):
            self._compiled = openvino.Core().compile_model(str(onnx_path), "CPU", config)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with _memory_errors("OpenVINO"):
            output = self._compiled(_contiguous_float32(batch))[0]
        return torch.from_numpy(np.asarray(output))


class OnnxRuntimeForward:
    """An ONNX Runtime CPU session on the ONNX network, ``threads`` intra-op threads (None: its default)."""

    def __init__(self, onnx_path: Path, threads: int | None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        with _memory_errors("ONNX Runtime"):
            self._session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with _memory_errors("ONNX Runtime"):
            output = self._session.run(None, {self._input: _contiguous_float32(batch)})[0]
        return torch.from_numpy(output)


RUNTIME_FORWARD = {"openvino": OpenVINOForward, "onnxruntime": OnnxRuntimeForward}


def make_forward(backend: str, network: torch.nn.Module, package: ModelPackage, input_shape: tuple[int, ...],
                 threads: int | None) -> Forward:
    """The forward pass of ``package``'s ``network`` (eval mode) on ``backend`` (resolved, not ``auto``).

    ``input_shape`` is one sample's ``(c, *patch)``: the runtimes' graph is exported for it,
    with a free batch axis.
    """
    if backend == "torch":
        return network
    from recokd.inference.export_cache import onnx_export

    with onnx_export(package, network, input_shape) as onnx_path:
        try:
            return RUNTIME_FORWARD[backend](onnx_path, threads)
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # a graph the runtime cannot compile: say so in one line
            raise RecokdError(f"{backend} cannot load {package.name}'s network ({type(error).__name__}: "
                              f"{str(error).strip()[:300]})") from error


def _contiguous_float32(batch: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())


@contextmanager
def _memory_errors(runtime: str) -> Iterator[None]:
    """Re-raise a runtime's allocation failure as :class:`torch.OutOfMemoryError` (the predictor retries cheaper)."""
    try:
        yield
    except Exception as error:
        text = str(error).lower()
        if isinstance(error, MemoryError) or any(word in text for word in _MEMORY_WORDS):
            raise torch.OutOfMemoryError(f"{runtime}: {str(error).strip()[:300]}") from error
        raise
