"""Model comparison on tiny random-initialised packages: scores, sizes, latencies, per-process memory."""

import math

import pytest
import SimpleITK as sitk
from tiny_student import oblique_volume, tiny_package, write_volume

from recokd.evaluate.comparison import evaluate_models, latency_and_memory_on_volume
from recokd.evaluate.complexity import count_parameters
from recokd.evaluate.volume_probe import native_geometry
from recokd.inference.predictor import StudentPredictor
from recokd.nnunet.network import build_network
from recokd.package.archive import write_package


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("packages")
    return {
        "teacher": write_package(tiny_package(seed=0), folder / "teacher.recokd.zip"),
        "student": write_package(tiny_package(seed=2, features=(8, 8, 8)), folder / "student.recokd.zip"),
    }


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Two oblique volumes whose reference labels are the first model's own predictions (without mirroring)."""
    folder = tmp_path_factory.mktemp("cases")
    predictor = StudentPredictor(tiny_package(seed=0), device="cpu", mirroring=False)
    pairs = []
    for seed in (0, 1):
        image = oblique_volume(size_xyz=(24, 20, 16), seed=seed)
        reference = predictor.predict_image(image)
        pairs.append((write_volume(image, folder / f"case_{seed}_0000.nii.gz"),
                      write_volume(reference, folder / f"case_{seed}.nii.gz")))
    return pairs


@pytest.fixture(scope="module")
def evaluated(packages, cases):
    return evaluate_models(packages, cases, device="cpu", mirroring=False)


def test_a_models_own_predictions_score_perfectly(evaluated):
    teacher = evaluated["teacher"]
    assert teacher["mean_dice"] == 1.0
    assert teacher["dice_per_class"] == {"liver": 1.0, "kidney": 1.0}
    assert teacher["hd95_per_class"] == {"liver": 0.0, "kidney": 0.0}


def test_another_model_scores_below_one(evaluated):
    student = evaluated["student"]
    assert list(evaluated) == ["teacher", "student"]
    assert student["mean_dice"] < 1.0
    assert all(v is None or 0.0 <= v <= 1.0 for v in student["dice_per_class"].values())


def test_entries_carry_size_cost_latency_and_per_case_points(evaluated, cases):
    student = evaluated["student"]
    network = build_network(tiny_package(features=(8, 8, 8)).plans, tiny_package().dataset_json, "3d_fullres")
    assert student["params"] == count_parameters(network)
    assert student["flops"] > 0 and student["flops_input_shape"] == [1, 1, 16, 16, 16]
    assert student["cpu_latency_s"] > 0 and student["gpu_latency_s"] is None
    assert [c["case"] for c in student["cases"]] == ["case_0", "case_1"]
    reference = sitk.ReadImage(str(cases[0][1]))
    voxel_ml = math.prod(reference.GetSpacing()) / 1000
    liver_voxels = int((sitk.GetArrayViewFromImage(reference) == 1).sum())
    assert student["cases"][0]["volume_ml"]["liver"] == pytest.approx(liver_voxels * voxel_ml)
    assert all(c["latency_s"] > 0 for c in student["cases"])


def test_latency_and_memory_are_measured_in_a_fresh_process_per_model(packages, tmp_path):
    measured = latency_and_memory_on_volume({"student": packages["student"]}, shape=(16, 24, 24),
                                            volume=tmp_path / "volume.nrrd")
    entry = measured["student"]
    assert set(entry) == {"ct_cpu_latency_s", "peak_rss_mb"}
    assert entry["ct_cpu_latency_s"] > 0
    # The child's own peak: the interpreter with PyTorch and nnU-Net, far below this test process's parent peak.
    assert 50 < entry["peak_rss_mb"] < 4096
    assert (tmp_path / "volume.nrrd").is_file()


def test_the_volume_probe_declares_the_models_own_spacing_in_input_axes():
    package = tiny_package(spacing=(3.0, 2.0, 0.5), transpose=(2, 0, 1))  # spacing of the input's (z, y, x)
    spacing_xyz, patch_zyx = native_geometry(package)
    assert spacing_xyz == (0.5, 2.0, 3.0)
    assert patch_zyx == (16, 16, 16)
