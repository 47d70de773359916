"""CPU backends (OpenVINO, ONNX Runtime): the same labels as PyTorch, and an export cache that is reused,
refreshed when the package changes, and rebuilt when it does not verify."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from tiny_student import oblique_volume, tiny_package

from recokd.data.phantom import generate_case
from recokd.demo import DemoConfig
from recokd.errors import RecokdError
from recokd.evaluate.metrics import dice_score
from recokd.inference.backends import _memory_errors, installed_backends, resolve_backend
from recokd.inference.export_cache import MANIFEST_FILE, ONNX_FILE, export_cache_dir
from recokd.inference.predictor import StudentPredictor
from recokd.package.archive import load_package
from recokd.package.registry import SOURCE_BUNDLED_DIR

RUNTIMES = [pytest.param(name, marks=pytest.mark.skipif(name not in installed_backends(), reason=f"{name} not installed"))
            for name in ("openvino", "onnxruntime")]
PHANTOM_TEACHER = SOURCE_BUNDLED_DIR / "phantom-teacher.recokd.zip"


@pytest.fixture(scope="module")
def volume():
    return oblique_volume(size_xyz=(24, 20, 12), spacing=(1.2, 0.9, 2.0))


def _labels(package, backend: str, image: sitk.Image, mirroring: bool = False) -> np.ndarray:
    predictor = StudentPredictor(package, device="cpu", mirroring=mirroring, threads=1, backend=backend)
    assert predictor.backend == backend
    return sitk.GetArrayFromImage(predictor.predict_image(image))


@pytest.mark.skipif(not PHANTOM_TEACHER.is_file(), reason="the shipped phantom teacher is absent")
@pytest.mark.parametrize("backend", RUNTIMES)
def test_a_runtime_segments_a_phantom_as_pytorch_does(backend):
    """The shipped phantom teacher on a phantom case it never saw, test-time mirroring on: >= 99.9 % of voxels
    agree and every structure's Dice between the two is >= 0.999."""
    package = load_package(PHANTOM_TEACHER)
    image, _ = generate_case(seed=123, case=0, config=DemoConfig().phantom).to_sitk()
    reference = _labels(package, "torch", image, mirroring=True)
    labels = _labels(package, backend, image, mirroring=True)
    assert len(np.unique(reference)) > 3  # a trained model: several structures found
    assert (labels == reference).mean() >= 0.999
    for label in package.labels:
        if (reference == label.value).any():
            assert dice_score(labels == label.value, reference == label.value) >= 0.999, label.name


@pytest.mark.parametrize("backend", RUNTIMES)
def test_the_export_is_cached_reused_and_refreshed_when_the_package_changes(backend, volume, tmp_path, caplog):
    from recokd.package.archive import write_package

    def entries() -> list[Path]:
        return sorted(p for p in export_cache_dir().iterdir() if not p.name.startswith("."))

    path = write_package(tiny_package(seed=0), tmp_path / "model.recokd.zip")
    first = _labels(load_package(path), backend, volume)
    (entry,) = entries()
    assert (entry / ONNX_FILE).is_file()
    written = (entry / ONNX_FILE).stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="recokd.inference.export_cache"):
        np.testing.assert_array_equal(_labels(load_package(path), backend, volume), first)
    assert any("reused" in r.getMessage() for r in caplog.records)
    assert (entry / ONNX_FILE).stat().st_mtime_ns == written

    write_package(tiny_package(seed=1), path, overwrite=True)  # the same file re-trained: other weights
    _labels(load_package(path), backend, volume)
    (refreshed,) = entries()
    assert refreshed != entry

    other = write_package(tiny_package(seed=2), tmp_path / "other" / "model.recokd.zip")  # same name, other file
    _labels(load_package(other), backend, volume)
    assert len(entries()) == 2 and refreshed in entries()
    manifests = [json.loads((e / MANIFEST_FILE).read_text()) for e in entries()]
    assert {m["package"] for m in manifests} == {load_package(path).name}
    assert {m["source"] for m in manifests} == {str(path.resolve()), str(other.resolve())}


@pytest.mark.parametrize("damage", ["truncated graph", "edited manifest", "missing manifest"])
def test_a_damaged_cache_entry_is_rebuilt_not_trusted(damage, volume, caplog):
    backend = installed_backends()[0]
    if backend == "torch":
        pytest.skip("no ONNX runtime installed")
    package = tiny_package(seed=0)
    expected = _labels(package, backend, volume)
    (entry,) = [p for p in export_cache_dir().iterdir() if not p.name.startswith(".")]
    graph, manifest = entry / ONNX_FILE, entry / MANIFEST_FILE
    if damage == "truncated graph":
        graph.write_bytes(graph.read_bytes()[:1000])
    elif damage == "edited manifest":
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "onnx_sha256": "0" * 64}))
    else:
        manifest.unlink()
    with caplog.at_level(logging.WARNING, logger="recokd.inference.export_cache"):
        np.testing.assert_array_equal(_labels(package, backend, volume), expected)
    assert any("did not verify" in r.getMessage() for r in caplog.records)
    assert graph.stat().st_size > 1000 and manifest.is_file()


def test_an_unwritable_cache_exports_for_this_load_only(volume, tmp_path, monkeypatch):
    backend = installed_backends()[0]
    if backend == "torch":
        pytest.skip("no ONNX runtime installed")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("RECOKD_EXPORT_CACHE", str(blocker / "cache"))
    labels = _labels(tiny_package(seed=0), backend, volume)
    assert labels.shape == sitk.GetArrayFromImage(volume).shape and blocker.is_file()


def test_the_backend_choice_is_resolved_and_checked():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_backend("auto", cpu) == installed_backends()[0]
    assert resolve_backend("auto", gpu) == "torch"
    assert installed_backends()[-1] == "torch"
    with pytest.raises(RecokdError, match="runs on the CPU"):
        resolve_backend("openvino", gpu)
    with pytest.raises(RecokdError, match="Unknown backend"):
        resolve_backend("tensorrt", cpu)


def test_a_runtimes_allocation_failure_becomes_out_of_memory_for_the_retry_ladder():
    with pytest.raises(torch.OutOfMemoryError, match="OpenVINO: .*bad_alloc"):
        with _memory_errors("OpenVINO"):
            raise RuntimeError("Exception from src/inference: std::bad_alloc")
    with pytest.raises(ValueError, match="shape"):  # anything else passes through unchanged
        with _memory_errors("ONNX Runtime"):
            raise ValueError("wrong input shape")


@pytest.mark.parametrize("backend", RUNTIMES)
def test_out_of_memory_in_a_runtime_is_retried_cheaper(backend, volume, monkeypatch):
    predictor = StudentPredictor(tiny_package(seed=0), device="cpu", mirroring=True, threads=1, backend=backend)
    runtime_forward, calls = predictor._nnunet.forward, {"n": 0}

    def failing_once(batch):
        calls["n"] += 1
        if calls["n"] == 1:
            with _memory_errors(backend):
                raise RuntimeError("Failed to allocate memory for requested buffer (simulated)")
        return runtime_forward(batch)

    monkeypatch.setattr(predictor._nnunet, "forward", failing_once)
    events = []
    labels = predictor.predict_image(volume, progress=events.append)
    assert any("one patch per forward pass" in e.message for e in events)
    assert predictor._nnunet.samples_per_forward == 1
    assert labels.GetSize() == volume.GetSize()


def test_the_package_folder_is_never_written(tmp_path, volume):
    from recokd.package.archive import write_package

    backend = installed_backends()[0]
    path = write_package(tiny_package(seed=0), tmp_path / "models" / "tiny.recokd.zip")
    before = sorted(Path(tmp_path / "models").iterdir())
    _labels(load_package(path), backend, volume)
    assert sorted(Path(tmp_path / "models").iterdir()) == before


@pytest.mark.parametrize("backend", RUNTIMES)
def test_progress_and_cancel_work_with_a_runtime(backend, volume):
    from recokd.errors import CancelledError
    from recokd.inference.progress import CancelToken

    predictor = StudentPredictor(tiny_package(seed=0), device="cpu", mirroring=True, threads=1, backend=backend)
    predictor._nnunet.samples_per_forward = 1
    runtime_forward, token, calls = predictor._nnunet.forward, CancelToken(), {"n": 0}

    def cancelling_after_two(batch):
        calls["n"] += 1
        if calls["n"] == 2:
            token.cancel("test cancel")
        return runtime_forward(batch)

    predictor._nnunet.forward = cancelling_after_two
    events = []
    with pytest.raises(CancelledError, match="test cancel"):
        predictor.predict_image(volume, progress=events.append, cancel=token)
    assert calls["n"] == 2  # stopped before the next forward pass
    assert any(e.stage == "predicting" for e in events)


def test_a_runtime_that_cannot_load_the_network_is_a_clear_error_and_auto_falls_back_to_pytorch(
        volume, monkeypatch, caplog):
    from recokd.inference import backends

    backend = installed_backends()[0]
    if backend == "torch":
        pytest.skip("no ONNX runtime installed")

    def refusing(onnx_path, threads):
        raise RuntimeError("Unsupported operation: SomeNewOp (simulated)")

    monkeypatch.setitem(backends.RUNTIME_FORWARD, backend, refusing)
    with pytest.raises(RecokdError, match=f"{backend} cannot load .*SomeNewOp"):
        StudentPredictor(tiny_package(seed=0), device="cpu", threads=1, backend=backend)
    with caplog.at_level(logging.WARNING, logger="recokd.inference.predictor"):
        predictor = StudentPredictor(tiny_package(seed=0), device="cpu", mirroring=False, threads=1, backend="auto")
    assert predictor.backend == "torch" and any("using PyTorch instead" in r.getMessage() for r in caplog.records)
    assert predictor.predict_image(volume).GetSize() == volume.GetSize()
