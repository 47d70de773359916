"""The synthetic CT phantom: the project's embedded default data."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import SimpleITK as sitk

from recokd.data.phantom import DEFAULT_CLASSES, PhantomConfig, generate_case, write_dataset
from recokd.errors import RecokdError


@pytest.fixture(scope="module")
def cases():
    return [generate_case(seed=0, case=i) for i in range(4)]


def test_every_class_is_present_in_every_case(cases):
    for case in cases:
        assert set(np.unique(case.labels)) == set(range(len(DEFAULT_CLASSES) + 1))


def test_tiny_structures_are_under_a_thousandth_of_the_volume_and_the_liver_is_large(cases):
    for case in cases:
        fraction = {name: np.mean(case.labels == value) for value, name in enumerate(DEFAULT_CLASSES, start=1)}
        assert fraction["adrenal_gland"] < 0.001 and fraction["vessel"] < 0.001
        assert fraction["liver"] > 0.02
        assert 0.001 < fraction["kidney_left"] < fraction["liver"]


def test_intensities_are_ct_like(cases):
    case = cases[0]
    assert case.image.dtype == np.int16
    assert case.image.min() <= -900, "air outside the body"
    liver = case.image[case.labels == 1]
    assert 60 < np.median(liver) < 160, "contrast-enhanced liver"
    background = case.image[(case.labels == 0) & (case.image > -500)]
    assert np.std(background) > 5, "noise"


def test_spacing_is_anisotropic_and_direction_is_not_identity_and_both_are_written(tmp_path, cases):
    case = cases[1]
    assert len(set(case.spacing)) == 3
    direction = np.array(case.direction).reshape(3, 3)
    assert not np.allclose(direction, np.eye(3))
    assert np.allclose(direction @ direction.T, np.eye(3), atol=1e-6)
    write_dataset(tmp_path, num_cases=2, seed=0)
    image = sitk.ReadImage(str(tmp_path / "imagesTr" / "phantom_001_0000.nii.gz"))
    labels = sitk.ReadImage(str(tmp_path / "labelsTr" / "phantom_001.nii.gz"))
    for written in (image, labels):
        assert np.allclose(written.GetSpacing(), case.spacing, atol=1e-5)
        assert np.allclose(written.GetDirection(), case.direction, atol=1e-5)
        assert np.allclose(written.GetOrigin(), case.origin, atol=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(labels), case.labels)


def test_same_seed_gives_same_bytes_and_other_seeds_differ(tmp_path):
    def digest(folder, seed):
        write_dataset(folder, num_cases=2, seed=seed, config=PhantomConfig(shape=(32, 32, 32)))
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.nii.gz"))}

    first, again, other = digest(tmp_path / "a", 7), digest(tmp_path / "b", 7), digest(tmp_path / "c", 8)
    assert first == again
    assert all(first[name] != other[name] for name in first)


def test_size_count_and_classes_are_configurable(tmp_path):
    config = PhantomConfig(shape=(24, 32, 40), classes=("liver", "vessel"))
    write_dataset(tmp_path, num_cases=3, num_test=2, seed=1, config=config)
    dataset = json.loads((tmp_path / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "liver": 1, "vessel": 2}
    assert dataset["numTraining"] == 3 and dataset["channel_names"] == {"0": "CT"}
    assert len(list((tmp_path / "imagesTr").glob("*_0000.nii.gz"))) == 3
    assert len(list((tmp_path / "labelsTs").glob("*.nii.gz"))) == 2
    image = sitk.ReadImage(str(tmp_path / "imagesTs" / "phantom_004_0000.nii.gz"))
    assert image.GetSize() == (40, 32, 24)


def test_unknown_classes_and_tiny_shapes_are_refused():
    with pytest.raises(RecokdError, match="Unknown phantom classes"):
        PhantomConfig(classes=("liver", "brain"))
    with pytest.raises(RecokdError, match="at least 16"):
        PhantomConfig(shape=(8, 64, 64))


def test_generated_dataset_passes_nnunet_integrity_check(tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    folder = write_dataset(tmp_path / "Dataset992_Check", num_cases=3, num_test=1, seed=3,
                           config=PhantomConfig(shape=(32, 32, 32)))
    verify_dataset_integrity(str(folder), num_processes=1)  # raises on any problem


def test_small_structure_scale_widens_only_the_tiny_structures_and_keeps_them_tiny():
    shape = (40, 40, 40)
    default = generate_case(0, 1, PhantomConfig(shape=shape))
    wider = generate_case(0, 1, PhantomConfig(shape=shape, small_structure_scale=1.5))
    counts = {name: [int((case.labels == label).sum()) for case in (default, wider)]
              for label, name in enumerate(DEFAULT_CLASSES, start=1)}
    for name in ("liver", "kidney_left", "kidney_right"):
        assert counts[name][0] == counts[name][1], name
    for name in ("adrenal_gland", "vessel"):
        assert 1.5 * counts[name][0] < counts[name][1] < 0.005 * default.labels.size, name
    with pytest.raises(RecokdError, match="small_structure_scale"):
        PhantomConfig(small_structure_scale=5.0)
