"""A model package written back as an nnU-Net results folder, so that a shipped teacher can teach."""

from __future__ import annotations

import torch
from tiny_results import checkpoint_for, phantom_dataset_json, plans_for, write_result

from recokd.nnunet.checkpoint import load_checkpoint
from recokd.nnunet.teacher import load_teacher
from recokd.package.archive import load_package, write_package
from recokd.package.export import export_package
from recokd.package.teacher_folder import teacher_folder_from_package


def test_a_package_becomes_a_results_folder_the_teacher_loader_reads_with_the_same_weights(tmp_path):
    plans, dataset_json = plans_for(), phantom_dataset_json()
    result = write_result(tmp_path / "trained", plans, dataset_json, checkpoint_for(plans, dataset_json, student=False))
    package = export_package(result, tmp_path / "teacher.recokd.zip", name="teacher")
    folder = teacher_folder_from_package(package, tmp_path / "results")
    assert folder.name == f"nnUNetTrainer__{plans['plans_name']}__3d_fullres"
    assert folder.parent.name == plans["dataset_name"]
    teacher = load_teacher(folder, dataset_json=dataset_json)
    expected = load_package(package).state_dict
    for name, value in teacher.network.state_dict().items():
        assert torch.equal(value, expected[name]), name
    assert teacher.mirror_axes == (0, 1, 2)
    checkpoint = load_checkpoint(folder / "fold_0" / "checkpoint_final.pth")  # weights_only: plain data only
    assert checkpoint["trainer_name"] == "nnUNetTrainer" and checkpoint["source_package"] == "teacher"

    before = (folder / "fold_0" / "checkpoint_final.pth").stat().st_mtime_ns
    assert teacher_folder_from_package(package, tmp_path / "results") == folder
    assert (folder / "fold_0" / "checkpoint_final.pth").stat().st_mtime_ns == before, "a second call writes nothing"


def test_a_folder_written_from_an_older_package_of_the_same_names_is_written_again(tmp_path):
    """A shipped teacher updated since a work directory was made must not keep teaching with its old weights."""
    plans, dataset_json = plans_for(), phantom_dataset_json()
    result = write_result(tmp_path / "trained", plans, dataset_json, checkpoint_for(plans, dataset_json, student=False))
    old = export_package(result, tmp_path / "old.recokd.zip", name="teacher")
    folder = teacher_folder_from_package(old, tmp_path / "results")

    updated = load_package(old)
    name = next(iter(updated.state_dict))
    updated.state_dict[name].add_(1.0)  # in place: its aliases (the same tensor under other keys) follow
    new = write_package(updated, tmp_path / "new.recokd.zip")
    assert teacher_folder_from_package(new, tmp_path / "results") == folder
    weights = load_checkpoint(folder / "fold_0" / "checkpoint_final.pth")["network_weights"]
    assert torch.equal(weights[name], updated.state_dict[name])

    before = (folder / "fold_0" / "checkpoint_final.pth").stat().st_mtime_ns
    teacher_folder_from_package(new, tmp_path / "results")
    assert (folder / "fold_0" / "checkpoint_final.pth").stat().st_mtime_ns == before, "the same package: nothing written"
