"""The students ReCoKD ships (``Resources/Models``): small, say where they come from, offered out of the box,
and segment a Hippocampus case as the benchmark measured it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import isolated_env, recokd

from recokd.evaluate.metrics import case_metrics, nan_mean
from recokd.evaluate.report import read_results
from recokd.inference.image_io import read_image
from recokd.inference.predictor import StudentPredictor
from recokd.package.archive import load_package

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "Resources" / "Models"
RESULTS = REPO / "ReCoKDTraining" / "benchmarks" / "results" / "hippocampus_cpu.json"
HIPPOCAMPUS = REPO.parent / "shared" / "data" / "Dataset004_Hippocampus"
SHIPPED = sorted(MODELS.glob("hippocampus-*.recokd.zip"))
MAX_BYTES = 2 * 1024 * 1024


def test_the_recokd_and_the_no_kd_hippocampus_students_are_shipped():
    assert [p.name for p in SHIPPED] == ["hippocampus-no-kd-x1of4.recokd.zip", "hippocampus-recokd-x1of4.recokd.zip"]


def measured_run(card: dict) -> dict:
    """The benchmark run (model and seed) the card says the package is."""
    model = read_results(RESULTS)["models"][card["benchmark"]["model"]]
    return next(run for run in model["runs"] if run["seed"] == card["seed"])


@pytest.mark.parametrize("package", SHIPPED, ids=lambda p: p.name.split(".")[0])
def test_a_shipped_student_is_small_and_its_card_names_data_licence_citation_and_accuracy(package):
    assert package.stat().st_size <= MAX_BYTES
    card = load_package(package).card  # every check of an untrusted package applies
    data = card["training_data"]
    assert data["licence"] == "CC-BY-SA 4.0" and "Simpson" in data["citation"] and "Task04" in data["source"]
    assert card["licence"]["training_data"] == "CC-BY-SA 4.0"
    run = measured_run(card)
    assert card["metrics"]["test_mean_dice"] == run["mean_dice"]
    difference = card["metrics"]["recokd_minus_no_kd_dice"]
    assert difference["ci_low"] <= difference["mean"] <= difference["ci_high"]


@pytest.mark.skipif(not HIPPOCAMPUS.is_dir(), reason="MSD Hippocampus is not in ../shared/data")
@pytest.mark.parametrize("package", SHIPPED, ids=lambda p: p.name.split(".")[0])
def test_a_shipped_student_segments_a_hippocampus_case_within_a_dice_point_of_the_benchmark(package):
    model = load_package(package)
    case = measured_run(model.card)["cases"][0]
    image = read_image(HIPPOCAMPUS / "imagesTr" / f"{case['case']}_0000.nii.gz")
    reference = read_image(HIPPOCAMPUS / "labelsTr" / f"{case['case']}.nii.gz")
    prediction = StudentPredictor(model, device="cpu", mirroring=True, threads=1).predict_image(image)
    dice = nan_mean(case_metrics(prediction, reference, [1, 2]).dice.values())
    assert abs(dice - nan_mean(case["dice"].values())) <= 0.01


def test_recokd_offers_the_shipped_students_out_of_the_box(tmp_path):
    env = {k: v for k, v in isolated_env().items() if k != "RECOKD_BUNDLED_MODELS_DIR"}
    env["RECOKD_MODELS_DIR"] = str(tmp_path / "nothing-installed")
    listed = {m["name"]: m for m in json.loads(recokd("models", "list", "--json", env=env).stdout)}
    for package in SHIPPED:
        name = package.name.removesuffix(".recokd.zip")
        assert listed[name]["bundled"] and Path(listed[name]["path"]) == package


PHANTOM_TEACHER = MODELS / "phantom-teacher.recokd.zip"


def test_the_demo_teacher_is_shipped_small_and_trained_for_the_demo_as_it_is_now():
    from recokd.demo import DemoConfig

    assert PHANTOM_TEACHER.stat().st_size <= 6 * 1024 * 1024
    card = load_package(PHANTOM_TEACHER).card
    assert card["demo_config"] == DemoConfig().to_dict()  # same phantom, sizes and schedules as the demo's
    assert card["licence"]["training_data"] == "CC0-1.0"


def test_the_demo_teacher_segments_all_five_structures_of_the_held_out_phantoms():
    """The demo's four held-out phantoms (they follow its 16 training cases), segmented again here: every
    structure above 50 % Dice, and each class's mean within a Dice point of the card's figure."""
    from recokd.data.phantom import generate_case
    from recokd.demo import DemoConfig

    config = DemoConfig()
    model = load_package(PHANTOM_TEACHER)
    predictor = StudentPredictor(model, device="cpu", mirroring=True, threads=1)
    names = {label.value: label.name for label in model.labels}
    scores: dict[str, list[float]] = {name: [] for name in names.values()}
    for index in range(config.train_cases, config.train_cases + config.test_cases):
        image, reference = generate_case(config.seed, index, config.phantom).to_sitk()
        for value, dice in case_metrics(predictor.predict_image(image), reference, list(names)).dice.items():
            scores[names[value]].append(dice)
    card = model.card["metrics"]["test_dice_per_class"]
    for name, values in scores.items():
        mean = sum(values) / len(values)
        assert mean > 0.5, name
        assert abs(mean - card[name]) <= 0.01, name


def test_pytorch_resampling_back_agrees_with_nnunets_on_a_thick_slice_phantom():
    """A held-out phantom resampled to a CT-like 0.8 x 0.8 x 3.2 mm grid, so that the logits go back
    through nnU-Net's separate-z path: the default (PyTorch) resampling and nnU-Net's own scipy
    arithmetic label >= 99.9 % of voxels alike, and each structure's Dice between them is >= 0.999."""
    import numpy as np
    import SimpleITK as sitk

    from recokd.data.phantom import generate_case
    from recokd.demo import DemoConfig

    config = DemoConfig()
    image, _ = generate_case(config.seed, config.train_cases, config.phantom).to_sitk()
    spacing = (0.8, 0.8, 3.2)
    size = [round(n * s / t) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    thick = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), spacing,
                          image.GetDirection(), -1000, image.GetPixelID())
    model = load_package(PHANTOM_TEACHER)
    labels = {}
    for resampling in ("torch", "nnunet"):
        predictor = StudentPredictor(model, device="cpu", mirroring=False, threads=1, resampling=resampling)
        labels[resampling] = sitk.GetArrayFromImage(predictor.predict_image(thick))
    fast, exact = labels["torch"], labels["nnunet"]
    assert np.mean(fast == exact) >= 0.999
    for label in model.labels:
        assert (exact == label.value).any(), label.name  # every structure is there to compare
        overlap = 2 * np.sum((fast == label.value) & (exact == label.value))
        assert overlap / (np.sum(fast == label.value) + np.sum(exact == label.value)) >= 0.999, label.name
