"""Default label names, colours and SNOMED CT codes derived from dataset.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_results import phantom_dataset_json

from recokd.errors import RecokdError
from recokd.package.model import Terminology
from recokd.package.terminology import ANATOMICAL_STRUCTURE, default_label_infos, foreground_labels

HIPPOCAMPUS_JSON = Path(__file__).resolve().parents[3] / "shared" / "data" / "Dataset004_Hippocampus" / "dataset.json"
LEFT, RIGHT = Terminology("SCT", "7771000", "Left"), Terminology("SCT", "24028007", "Right")


def by_name(dataset_json: dict) -> dict:
    return {info.name: info for info in default_label_infos(dataset_json)}


def test_phantom_labels_get_slicer_codes_and_colours():
    infos = by_name(phantom_dataset_json())
    assert list(infos) == ["liver", "kidney_left", "kidney_right", "adrenal_gland", "vessel"]
    assert all(i.category == ANATOMICAL_STRUCTURE and not i.custom for i in infos.values())
    assert infos["liver"].type == Terminology("SCT", "10200004", "Liver")
    assert infos["liver"].color == (221, 130, 101) and infos["liver"].modifier is None
    assert infos["kidney_left"].type.code == infos["kidney_right"].type.code == "64033007"
    assert (infos["kidney_left"].modifier, infos["kidney_right"].modifier) == (LEFT, RIGHT)
    assert infos["adrenal_gland"].type.code == "23451007"
    assert infos["vessel"].type == Terminology("SCT", "59820001", "Blood vessel")
    assert [i.value for i in infos.values()] == [1, 2, 3, 4, 5]


def test_colours_are_distinct_within_a_model():
    infos = default_label_infos(phantom_dataset_json())
    assert len({i.color for i in infos}) == len(infos)
    assert infos[1].color == (185, 102, 83)  # the first kidney keeps Slicer's colour, the second is lightened


@pytest.mark.parametrize("name", ["Right adrenal gland", "adrenal_gland_right", "RightAdrenalGland",
                                  "right-adrenal-gland"])
def test_name_spellings_are_recognised(name):
    info = default_label_infos({"labels": {"background": 0, name: 1}})[0]
    assert (info.type.code, info.modifier, info.name) == ("23451007", RIGHT, name)


def test_msd_hippocampus_labels_take_the_structure_from_the_dataset_name():
    dataset_json = (json.loads(HIPPOCAMPUS_JSON.read_text()) if HIPPOCAMPUS_JSON.is_file()
                    else {"name": "Hippocampus", "labels": {"background": 0, "Anterior": 1, "Posterior": 2}})
    anterior, posterior = default_label_infos(dataset_json)
    assert anterior.type == posterior.type == Terminology("SCT", "5366008", "Hippocampus")
    assert anterior.modifier == Terminology("SCT", "255549009", "Anterior")
    assert posterior.modifier == Terminology("SCT", "255551008", "Posterior")
    assert anterior.color != posterior.color and not anterior.custom


def test_unknown_names_get_marked_custom_codes_and_distinct_colours():
    infos = default_label_infos({"name": "Phantom", "labels": {"background": 0, "tumour core": 1, "Anterior": 2,
                                                                "edema": 3}})
    assert all(i.custom and i.type.scheme == "ReCoKD" and i.category.scheme == "ReCoKD" for i in infos)
    assert infos[0].type == Terminology("ReCoKD", "tumour-core", "tumour core")
    assert len({i.color for i in infos}) == 3


def test_region_based_labels_use_regions_class_order_and_skip_ignore():
    dataset_json = {"labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing": 3,
                               "ignore": 4}, "regions_class_order": [1, 2, 3]}
    assert foreground_labels(dataset_json) == [(1, "whole tumor"), (2, "tumor core"), (3, "enhancing")]


def test_region_based_labels_without_order_are_refused():
    with pytest.raises(RecokdError, match="regions_class_order"):
        foreground_labels({"labels": {"background": 0, "whole tumor": [1, 2]}})
