"""StudentPredictor: nnU-Net's prediction, plus progress, cancel, geometry, dtype and out-of-memory retries."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from tiny_student import oblique_volume, tiny_dataset_json, tiny_package, write_volume

from recokd.errors import CancelledError, RecokdError
from recokd.inference.predictor import StudentPredictor
from recokd.inference.progress import STAGE_SPANS, CancelToken

FIXTURE_CT = Path(__file__).resolve().parents[3] / "shared" / "data" / "fixtures" / "example_ct_sm.nii.gz"


@pytest.fixture(scope="module")
def package():
    return tiny_package(seed=0)


@pytest.fixture(scope="module")
def fast_predictor(package):
    return StudentPredictor(package, device="cpu", backend="torch", mirroring=False, threads=1)


@pytest.fixture(scope="module")
def volume():
    return oblique_volume(size_xyz=(24, 20, 12), spacing=(1.2, 0.9, 2.0))


def _geometry(image: sitk.Image) -> tuple:
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def test_labels_keep_the_exact_geometry_of_an_oblique_anisotropic_volume(fast_predictor, volume):
    labels = fast_predictor.predict_image(volume)
    assert _geometry(labels) == _geometry(volume)
    assert labels.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(labels))) <= {0, 1, 2}


def test_array_and_image_paths_agree(fast_predictor, volume):
    from_image = sitk.GetArrayFromImage(fast_predictor.predict_image(volume))
    from_array = fast_predictor.predict_array(sitk.GetArrayFromImage(volume), volume.GetSpacing())
    assert from_array.dtype == np.uint8 and from_array.shape == from_image.shape
    np.testing.assert_array_equal(from_array, from_image)


def test_labels_equal_nnunets_own_file_based_prediction(package, volume, tmp_path):
    """Same network, same file: nnU-Net's reader, preprocessing, sliding window (mirrored) and export."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from recokd.nnunet.network import build_network

    image_file = write_volume(volume, tmp_path / "case_0000.nii.gz")
    network = build_network(package.plans, package.dataset_json, package.configuration)
    network.load_state_dict(package.state_dict)
    plans_manager = PlansManager(package.plans)
    reference = nnUNetPredictor(tile_step_size=0.5, use_mirroring=True, perform_everything_on_device=False,
                                device=torch.device("cpu"), allow_tqdm=False)
    reference.manual_initialization(network, plans_manager, plans_manager.get_configuration("3d_fullres"),
                                    [package.state_dict], package.dataset_json, "nnUNetTrainer", (0, 1, 2))
    (tmp_path / "nnunet").mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference.predict_from_files_sequential([[str(image_file)]], str(tmp_path / "nnunet"), overwrite=True)
    finally:
        torch.set_num_threads(threads)
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "nnunet" / "case.nii.gz")))

    ours = StudentPredictor(package, device="cpu", backend="torch", mirroring=True, threads=1,
                            resampling="nnunet").predict_image(
        sitk.ReadImage(str(image_file))
    )
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), expected)


def test_region_based_model_matches_nnunets_array_prediction(volume):
    """Sigmoid regions (nested labels) go through nnU-Net's own conversion; same as predict_single_npy_array."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    regions = {**tiny_dataset_json(), "labels": {"background": 0, "organ": [1, 2], "core": 2},
               "regions_class_order": [1, 2]}
    package = tiny_package(seed=3, dataset_json=regions)
    plans_manager = PlansManager(package.plans)
    reference = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=torch.device("cpu"),
                                allow_tqdm=False)
    reference.manual_initialization(StudentPredictor(package, device="cpu", backend="torch").network, plans_manager,
                                    plans_manager.get_configuration("3d_fullres"), [package.state_dict],
                                    package.dataset_json, "nnUNetTrainer", None)
    array = sitk.GetArrayFromImage(volume)
    spacing = {"spacing": list(volume.GetSpacing()[::-1])}
    expected = reference.predict_single_npy_array(array[None].astype(np.float32), spacing)
    labels = StudentPredictor(package, device="cpu", backend="torch", mirroring=False).predict_array(array, volume.GetSpacing())
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    np.testing.assert_array_equal(labels, expected)


def test_progress_visits_the_stages_in_order_with_fractions_that_never_decrease(fast_predictor, volume):
    events = []
    fast_predictor.predict_image(volume, progress=events.append)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions)
    assert 0.0 <= fractions[0] and fractions[-1] == pytest.approx(STAGE_SPANS["resampling"][1])
    stages = [e.stage for e in events]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == [
        "preprocessing", "predicting", "resampling"
    ]
    tiles = [tuple(map(int, e.message.split()[1].split("/"))) for e in events if e.message.startswith("tile ")]
    total = tiles[-1][1]
    assert tiles[-1] == (total, total) and total > 1
    per_batch = max(1, fast_predictor._nnunet.samples_per_forward)  # no mirroring: one copy per tile
    assert [done for done, _ in tiles] == [min(total, k * per_batch) for k in range(1, len(tiles) + 1)]


@pytest.mark.parametrize("samples_per_forward", [1, 8])
def test_cancel_stops_after_the_running_forward_pass_and_leaves_no_thread(package, volume, samples_per_forward):
    predictor = StudentPredictor(package, device="cpu", backend="torch", mirroring=True, threads=1)
    predictor._nnunet.samples_per_forward = samples_per_forward  # white box: one patch or all 8 copies per pass
    token = CancelToken()
    forwards = {"before": 0, "after": 0}

    def count(module, inputs, output) -> None:
        forwards["after" if token.cancelled else "before"] += 1
        if forwards["before"] == 2:
            token.cancel("test cancel")

    threads_before = set(threading.enumerate())
    handle = predictor.network.register_forward_hook(count)
    try:
        with pytest.raises(CancelledError, match="test cancel"):
            predictor.predict_image(volume, cancel=token)
    finally:
        handle.remove()
    assert forwards == {"before": 2, "after": 0}
    assert set(threading.enumerate()) <= threads_before


def test_cancel_before_start_raises_at_once(fast_predictor, volume):
    token = CancelToken()
    token.cancel("early")
    started = time.perf_counter()
    with pytest.raises(CancelledError, match="early"):
        fast_predictor.predict_image(volume, cancel=token)
    assert time.perf_counter() - started < 1.0


def test_fixture_ct_keeps_its_geometry():
    if not FIXTURE_CT.exists():
        pytest.skip(f"shared CT fixture not found at {FIXTURE_CT}")
    image = sitk.ReadImage(str(FIXTURE_CT))
    package = tiny_package(seed=1, spacing=(3.0, 3.0, 3.0))  # the fixture's spacing: few tiles
    predictor = StudentPredictor(package, device="cpu", backend="torch", mirroring=False, tile_step=1.0, threads=1)
    labels = predictor.predict_image(image)
    assert _geometry(labels) == _geometry(image)
    assert labels.GetPixelID() == sitk.sitkUInt8


def test_four_d_image_with_the_models_channel_count_gives_three_d_labels(fast_predictor, volume):
    four_d = sitk.JoinSeries([volume])
    labels = fast_predictor.predict_image(four_d)
    assert _geometry(labels) == _geometry(volume)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(fast_predictor.predict_image(volume))
    )


def test_threads_option_applies_during_the_call_only(package, volume):
    before = torch.get_num_threads()
    predictor = StudentPredictor(package, device="cpu", backend="torch", mirroring=False, threads=1)
    seen = []
    handle = predictor.network.register_forward_hook(lambda *args: seen.append(torch.get_num_threads()))
    try:
        predictor.predict_image(volume)
    finally:
        handle.remove()
    assert set(seen) == {1}
    assert torch.get_num_threads() == before


def _flaky_forward(network, failures: int):
    """Make ``network`` raise a (simulated) CUDA out-of-memory error on its first ``failures`` calls."""
    original = network.forward
    calls = {"n": 0}

    def forward(x):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return original(x)

    return forward


def test_out_of_memory_is_retried_with_smaller_forward_passes_then_without_mirroring(
        package, volume, monkeypatch, caplog):
    predictor = StudentPredictor(package, device="cpu", backend="torch", mirroring=True, threads=1)
    assert predictor._nnunet.samples_per_forward > 1
    monkeypatch.setattr(predictor.network, "forward", _flaky_forward(predictor.network, failures=2))
    events = []
    with caplog.at_level(logging.WARNING, logger="recokd.inference.predictor"):
        labels = predictor.predict_image(volume, progress=events.append)
    notices = ["one patch per forward pass", "without test-time mirroring"]
    for notice in notices:
        assert any(notice in e.message for e in events)
        assert any(notice in r.getMessage() for r in caplog.records)
    assert predictor.mirroring is False and predictor._nnunet.samples_per_forward == 1
    unmirrored = StudentPredictor(package, device="cpu", backend="torch", mirroring=False, threads=1)
    unmirrored._nnunet.samples_per_forward = 1
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels),
                                  sitk.GetArrayFromImage(unmirrored.predict_image(volume)))


def test_out_of_memory_ladder_ends_in_a_user_error(package, volume, monkeypatch):
    predictor = StudentPredictor(package, device="cpu", backend="torch", mirroring=True, threads=1)
    predictor._nnunet.perform_everything_on_device = True  # white box: the GPU-only rung, harmless on CPU
    monkeypatch.setattr(predictor.network, "forward", _flaky_forward(predictor.network, failures=10**6))
    events = []
    with pytest.raises(RecokdError, match="Out of memory even on the CPU"):
        predictor.predict_image(volume, progress=events.append)
    notices = [e.message for e in events if e.message.startswith("Out of memory")]
    assert notices == [
        "Out of memory: retrying with one patch per forward pass.",
        "Out of memory: retrying without test-time mirroring.",
        "Out of memory: retrying with the result arrays in host memory.",
    ]


def test_bad_options_are_user_errors(package):
    with pytest.raises(RecokdError, match="Tile step"):
        StudentPredictor(package, device="cpu", backend="torch", tile_step=0.0)
    with pytest.raises(RecokdError, match="Thread count"):
        StudentPredictor(package, device="cpu", backend="torch", threads=0)


def test_weights_that_do_not_fit_the_plans_are_refused(package):
    broken = tiny_package(seed=0)
    broken.state_dict.pop(next(iter(broken.state_dict)))
    with pytest.raises(RecokdError, match="do not fit"):
        StudentPredictor(broken, device="cpu")


@pytest.mark.parametrize("reader, refused", [("SimpleITKIO", False), ("NibabelIO", False),
                                             ("NibabelIOWithReorient", True), ("SimpleITKIOWithReorient", True)])
def test_a_model_planned_with_a_reorienting_reader_is_refused(reader, refused):
    """A ...WithReorient reader turns images to RAS before the network: fed SimpleITK's arrays, such a model's
    labels would be misplaced. NibabelIO hands nnU-Net the same arrays and spacing as SimpleITKIO."""
    package = tiny_package(seed=0)
    package.plans["image_reader_writer"] = reader
    if refused:
        with pytest.raises(RecokdError, match=f"planned with nnU-Net's {reader} reader"):
            StudentPredictor(package, device="cpu", backend="torch")
    else:
        assert StudentPredictor(package, device="cpu", backend="torch").package is package
