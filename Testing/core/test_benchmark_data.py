"""The benchmark's fixed split, its raw dataset built from links, and the student width within budget."""

import json
from fractions import Fraction

import pytest
from tiny_results import phantom_dataset_json, plans_for

from recokd.errors import RecokdError
from recokd.evaluate.benchmark_data import case_ids, held_out_cases, seeded_split, write_split_dataset
from recokd.evaluate.complexity import plans_complexity
from recokd.evaluate.protocol import choose_width
from recokd.nnunet.student_plans import derive_student_plans

IDS = [f"case_{i:03d}" for i in range(20)]


def test_split_is_seeded_disjoint_and_complete():
    split = seeded_split(IDS, 0.2, seed=7)
    assert split == seeded_split(list(reversed(IDS)), 0.2, seed=7)
    assert len(split.test) == 4 and not set(split.test) & set(split.train)
    assert sorted(split.train + split.test) == IDS
    assert seeded_split(IDS, 0.2, seed=8).test != split.test
    assert split.to_dict()["num_train"] == 16


def test_split_needs_two_cases_and_a_proper_fraction():
    with pytest.raises(RecokdError):
        seeded_split(["only"], 0.2, 0)
    with pytest.raises(RecokdError):
        seeded_split(IDS, 1.0, 0)


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "Dataset004_Source"
    for kind in ("imagesTr", "labelsTr"):
        (folder / kind).mkdir(parents=True)
    for case in IDS[:6]:
        (folder / "imagesTr" / f"{case}_0000.nii.gz").write_bytes(b"image " + case.encode())
        (folder / "labelsTr" / f"{case}.nii.gz").write_bytes(b"label " + case.encode())
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1}, "numTraining": 6,
                                                     "file_ending": ".nii.gz", "description": "source"}))
    return folder


def test_split_dataset_holds_training_cases_in_tr_and_test_cases_in_ts_only(source, tmp_path):
    split = seeded_split(case_ids(source), 0.34, seed=0)
    out = write_split_dataset(source, tmp_path / "Dataset904_Split", split, "benchmark split")
    assert case_ids(out, "Tr") == list(split.train)
    assert case_ids(out, "Ts") == list(split.test)
    assert not any(case in p.name for case in split.test for p in (out / "imagesTr").iterdir())
    dataset_json = json.loads((out / "dataset.json").read_text())
    assert dataset_json["numTraining"] == len(split.train)
    image, label = held_out_cases(out)[0]
    assert image.read_bytes() == f"image {split.test[0]}".encode()
    assert label.read_bytes() == f"label {split.test[0]}".encode()
    assert sorted(p.name for p in source.iterdir()) == ["dataset.json", "imagesTr", "labelsTr"]  # source untouched


def test_width_is_kept_within_the_parameter_budget_and_narrowed_when_needed():
    plans, dataset_json = plans_for(features=(32, 64, 128)), phantom_dataset_json()

    def ratio(width):
        student = derive_student_plans(plans, "3d_fullres", width)
        return (plans_complexity(student, dataset_json, "3d_fullres").parameters
                / plans_complexity(plans, dataset_json, "3d_fullres").parameters)

    quarter, eighth = ratio(Fraction(1, 4)), ratio(Fraction(1, 8))
    width, note = choose_width(plans, dataset_json, "3d_fullres", Fraction(1, 4), max_ratio=quarter)
    assert width == Fraction(1, 4) and f"{quarter:.3f}" in note
    width, note = choose_width(plans, dataset_json, "3d_fullres", Fraction(1, 4), max_ratio=(quarter + eighth) / 2)
    assert width == Fraction(1, 8) and "next narrower" in note
    with pytest.raises(RecokdError, match="parameters"):
        choose_width(plans, dataset_json, "3d_fullres", Fraction(1, 4), max_ratio=eighth / 2)


def test_a_work_directory_accepts_its_own_settings_again_and_refuses_others(tmp_path):
    """Restarting a benchmark with the same settings continues it (the preset holds tuples, JSON lists)."""
    from dataclasses import replace

    from recokd.evaluate.protocol import PRESETS, BenchmarkConfig, _claim_work_dir

    config = BenchmarkConfig("phantom", PRESETS["cpu"], tmp_path)
    _claim_work_dir(tmp_path, config.fingerprint())
    _claim_work_dir(tmp_path, config.fingerprint())
    with pytest.raises(RecokdError, match=r"other settings \(seed differ\)"):
        _claim_work_dir(tmp_path, replace(config, seed=1).fingerprint())
    assert json.loads((tmp_path / "benchmark_config.json").read_text())["seed"] == 0


def test_a_run_recorded_before_newer_distillation_options_existed_continues(tmp_path):
    """Options added since (e.g. soft_target_weight) count as their defaults, which the old run used."""
    from recokd.evaluate.protocol import PRESETS, BenchmarkConfig, _claim_work_dir

    fingerprint = BenchmarkConfig("phantom", PRESETS["cpu"], tmp_path).fingerprint()
    older = json.loads(json.dumps(fingerprint))
    del older["kd_options"]["soft_target_weight"], older["kd_options"]["labeled_share"]
    (tmp_path / "benchmark_config.json").write_text(json.dumps(older))
    _claim_work_dir(tmp_path, fingerprint)
