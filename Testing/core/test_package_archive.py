"""Model package file: round trip, determinism, and every tampered form the loader must refuse."""

from __future__ import annotations

import hashlib
import json
import pickle
import stat
import zipfile
from pathlib import Path

import pytest
import safetensors.torch
import torch
from tiny_results import CONFIGURATION, phantom_dataset_json, plans_for, seeded_weights

from recokd.errors import RecokdError
from recokd.package import archive
from recokd.package.archive import (
    CHECKSUMS,
    LABELS,
    PLANS,
    WEIGHTS,
    load_package,
    read_package_info,
    write_package,
)
from recokd.package.model import ModelPackage
from recokd.package.terminology import default_label_infos


def make_package(arch: str = "plain") -> ModelPackage:
    plans, dataset_json = plans_for(arch), phantom_dataset_json()
    return ModelPackage(
        plans=plans,
        dataset_json=dataset_json,
        configuration=CONFIGURATION,
        labels=default_label_infos(dataset_json),
        state_dict=seeded_weights(plans, dataset_json, seed=3),
        card={"name": "tiny", "description": "a tiny test model", "created": "2026-01-01T00:00:00+00:00"},
        mirror_axes=(0, 1, 2),
    )


@pytest.fixture(scope="module")
def package_file(tmp_path_factory) -> Path:
    return write_package(make_package(), tmp_path_factory.mktemp("pkg") / "tiny.recokd.zip")


def members_of(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {info.filename: z.read(info) for info in z.infolist()}


def write_zip(path: Path, members: dict[str, bytes], fix_checksums: bool = True, extra=()) -> Path:
    """A zip of ``members`` (checksums recomputed unless told not to) plus raw ``(ZipInfo, bytes)`` extras."""
    members = dict(members)
    if fix_checksums:
        members[CHECKSUMS] = json.dumps(
            {n: hashlib.sha256(d).hexdigest() for n, d in members.items() if n != CHECKSUMS}).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        for info, data in extra:
            z.writestr(info, data)
    return path


def refused(path: Path, match: str, **kwargs) -> None:
    with pytest.raises(RecokdError, match=match):
        load_package(path, **kwargs)


def edit_json(members: dict[str, bytes], name: str, edit) -> dict[str, bytes]:
    value = json.loads(members[name])
    edit(value)
    return {**members, name: json.dumps(value).encode()}


def edit_tensors(members: dict[str, bytes], edit) -> dict[str, bytes]:
    tensors = safetensors.torch.load(members[WEIGHTS])
    edit(tensors)
    return {**members, WEIGHTS: safetensors.torch.save(tensors)}


# ---------------------------------------------------------------------------------------- round trip

@pytest.mark.parametrize("arch", ["plain", "resenc"])
def test_round_trip_gives_identical_tensors_labels_and_settings(tmp_path, arch):
    package = make_package(arch)
    loaded = load_package(write_package(package, tmp_path / "m.recokd.zip"))
    assert loaded.state_dict.keys() == package.state_dict.keys()
    for key, tensor in package.state_dict.items():
        assert torch.equal(loaded.state_dict[key], tensor), key
    assert loaded.labels == package.labels
    assert loaded.plans == package.plans and loaded.dataset_json == package.dataset_json
    assert (loaded.configuration, loaded.mirror_axes, loaded.card) == (CONFIGURATION, (0, 1, 2), package.card)
    assert loaded.name == "tiny" and loaded.source == tmp_path / "m.recokd.zip"


def test_loaded_state_dict_loads_strictly_into_the_plans_network(package_file):
    from recokd.nnunet.network import build_network

    package = load_package(package_file)
    network = build_network(package.plans, package.dataset_json, package.configuration)
    network.load_state_dict(package.state_dict, strict=True)


def test_aliased_tensors_are_stored_once(package_file):
    stored = safetensors.torch.load(members_of(package_file)[WEIGHTS])
    loaded = load_package(package_file).state_dict
    assert len(stored) < len(loaded)
    assert all(key in loaded for key in stored)


def test_package_holds_exactly_the_format_members_with_valid_checksums(package_file):
    members = members_of(package_file)
    assert set(members) == set(archive.MEMBERS)
    checksums = json.loads(members[CHECKSUMS])
    assert checksums == {n: hashlib.sha256(d).hexdigest() for n, d in members.items() if n != CHECKSUMS}
    assert b"# tiny" in members["model_card.md"]


def test_writing_is_deterministic(tmp_path):
    a = write_package(make_package(), tmp_path / "a.recokd.zip").read_bytes()
    b = write_package(make_package(), tmp_path / "b.recokd.zip").read_bytes()
    assert a == b


def test_write_refuses_to_overwrite_and_wrong_suffix(tmp_path, package_file):
    out = tmp_path / "m.recokd.zip"
    out.write_bytes(b"keep me")
    with pytest.raises(RecokdError, match="already exists"):
        write_package(make_package(), out)
    assert out.read_bytes() == b"keep me"
    write_package(make_package(), out, overwrite=True)
    assert load_package(out).name == "tiny"
    with pytest.raises(RecokdError, match="end with '.recokd.zip'"):
        write_package(make_package(), tmp_path / "m.zip")


def test_a_failed_write_leaves_no_file_behind(tmp_path):
    package = make_package()
    package.labels = package.labels[:-1]  # labels no longer match dataset.json: verification fails
    with pytest.raises(RecokdError, match="labels.json describes"):
        write_package(package, tmp_path / "m.recokd.zip")
    assert list(tmp_path.iterdir()) == []


def test_loading_never_unpickles(package_file, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling during package load")

    for module, name in ((pickle, "loads"), (pickle, "load"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, forbidden)
    assert load_package(package_file).name == "tiny"


def test_read_package_info_reads_card_and_labels(package_file):
    info = read_package_info(package_file)
    assert info.card["description"] == "a tiny test model"
    assert [label.name for label in info.labels] == list(phantom_dataset_json()["labels"])[1:]


def test_read_package_info_lists_packages_whose_weights_exceed_the_text_cap(package_file, monkeypatch):
    import recokd.package.archive as archive

    weights_size = zipfile.ZipFile(package_file).getinfo("weights.safetensors").file_size
    monkeypatch.setattr(archive, "MAX_TEXT_MEMBER_BYTES", weights_size // 2)
    assert read_package_info(package_file).card["name"] == "tiny"


# ---------------------------------------------------------------------------------------- refusals

def test_not_a_zip_is_refused(tmp_path):
    path = tmp_path / "x.recokd.zip"
    path.write_text("just text")
    refused(path, "not a zip file, or truncated")


def test_truncated_zip_is_refused(tmp_path, package_file):
    data = package_file.read_bytes()
    path = tmp_path / "cut.recokd.zip"
    path.write_bytes(data[: len(data) // 2])
    refused(path, "not a zip file, or truncated")


def test_missing_file_is_refused(tmp_path):
    refused(tmp_path / "none.recokd.zip", "does not exist")


@pytest.mark.parametrize("name", ["model.pkl", "weights.pth", "extra/network.pt"])
def test_pickle_members_are_refused(tmp_path, package_file, name):
    members = {**members_of(package_file), name: pickle.dumps({"a": 1})}
    refused(write_zip(tmp_path / "p.recokd.zip", members), "pickle")


@pytest.mark.parametrize(("name", "why"), [
    ("../evil.json", "'..'"),
    ("sub/../../evil.json", "'..'"),
    ("/etc/evil.json", "absolute path"),
    ("C:/evil.json", "absolute path"),
    ("..\\evil.json", "backslash"),
])
def test_escaping_member_names_are_refused(tmp_path, package_file, name, why):
    info = zipfile.ZipInfo("placeholder")
    info.filename = name  # ZipInfo would normalise some of these names; set it raw as an attacker would
    refused(write_zip(tmp_path / "e.recokd.zip", members_of(package_file), extra=[(info, b"{}")]), why)


def test_unknown_members_are_refused(tmp_path, package_file):
    members = {**members_of(package_file), "notes.txt": b"hello"}
    refused(write_zip(tmp_path / "u.recokd.zip", members), "not part of the model package format")


def test_symlink_members_are_refused(tmp_path, package_file):
    members = members_of(package_file)
    del members[LABELS]
    link = zipfile.ZipInfo(LABELS)
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = write_zip(tmp_path / "l.recokd.zip", members, fix_checksums=False, extra=[(link, b"/etc/passwd")])
    refused(path, "symbolic link")


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_duplicate_members_are_refused(tmp_path, package_file):
    members = members_of(package_file)
    path = write_zip(tmp_path / "d.recokd.zip", members, fix_checksums=False,
                     extra=[(zipfile.ZipInfo(PLANS), b"{}")])
    refused(path, "appears twice")


@pytest.mark.parametrize("name", ["inference.json", "weights.safetensors", "checksums.json"])
def test_missing_members_are_refused(tmp_path, package_file, name):
    members = members_of(package_file)
    del members[name]
    path = write_zip(tmp_path / "m.recokd.zip", members, fix_checksums=name != CHECKSUMS)
    refused(path, f"lacks required member.*{name}")


def test_checksum_mismatch_is_refused(tmp_path, package_file):
    members = edit_json(members_of(package_file), PLANS, lambda p: p.update(plans_name="edited"))
    refused(write_zip(tmp_path / "c.recokd.zip", members, fix_checksums=False), "plans.json' does not match its checksum")


def test_tampered_weights_fail_the_checksum(tmp_path, package_file):
    members = edit_tensors(members_of(package_file), lambda t: t[next(iter(t))].add_(1.0))
    refused(write_zip(tmp_path / "w.recokd.zip", members, fix_checksums=False),
            "weights.safetensors' does not match its checksum")


def test_checksums_must_cover_exactly_the_members(tmp_path, package_file):
    members = members_of(package_file)
    checksums = json.loads(members[CHECKSUMS])
    del checksums[LABELS]
    path = write_zip(tmp_path / "k.recokd.zip", {**members, CHECKSUMS: json.dumps(checksums).encode()},
                     fix_checksums=False)
    refused(path, "checksums.json lists")


def test_wrong_tensor_shape_is_refused(tmp_path, package_file):
    def widen(tensors):
        key = next(k for k in tensors if k.endswith("weight") and tensors[k].dim() == 5)
        tensors[key] = torch.zeros(tensors[key].shape[0] + 1, *tensors[key].shape[1:])

    members = edit_tensors(members_of(package_file), widen)
    refused(write_zip(tmp_path / "s.recokd.zip", members), "network from plans.json needs")


def test_wrong_tensor_dtype_is_refused(tmp_path, package_file):
    def to_half(tensors):
        key = next(iter(tensors))
        tensors[key] = tensors[key].half()

    members = edit_tensors(members_of(package_file), to_half)
    refused(write_zip(tmp_path / "h.recokd.zip", members), "torch.float16")


def test_unknown_tensor_name_is_refused(tmp_path, package_file):
    members = edit_tensors(members_of(package_file), lambda t: t.update({"adapters.0.weight": torch.zeros(2)}))
    refused(write_zip(tmp_path / "n.recokd.zip", members), "no place for: adapters.0.weight")


def test_missing_tensor_is_refused(tmp_path, package_file):
    members = edit_tensors(members_of(package_file), lambda t: t.pop(next(iter(t))))
    refused(write_zip(tmp_path / "t.recokd.zip", members), "lacks tensors")


def test_invalid_safetensors_bytes_are_refused(tmp_path, package_file):
    members = {**members_of(package_file), WEIGHTS: b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}"}
    refused(write_zip(tmp_path / "b.recokd.zip", members), "not a valid safetensors file")


def test_weights_for_other_plans_are_refused(tmp_path, package_file):
    members = edit_json(members_of(package_file), PLANS, lambda p: p["configurations"][CONFIGURATION]
                        ["architecture"]["arch_kwargs"].update(features_per_stage=[8, 16, 32]))
    refused(write_zip(tmp_path / "o.recokd.zip", members), "network from plans.json needs")


def test_oversized_member_is_refused_by_declared_size(package_file):
    refused(package_file, "weights.safetensors' is larger than the 1,000-byte limit", max_member_bytes=1000)


def test_a_lying_declared_size_is_refused(tmp_path, package_file):
    """A central directory that under-declares a member's size cannot smuggle in more bytes."""
    data = bytearray(package_file.read_bytes())
    start = data.find(b"PK\x01\x02")  # central directory entries
    while start >= 0:
        name_length = int.from_bytes(data[start + 28:start + 30], "little")
        if data[start + 46:start + 46 + name_length] == LABELS.encode():
            data[start + 24:start + 28] = (10).to_bytes(4, "little")  # uncompressed size
        start = data.find(b"PK\x01\x02", start + 4)
    path = tmp_path / "lie.recokd.zip"
    path.write_bytes(bytes(data))
    assert zipfile.ZipFile(path).getinfo(LABELS).file_size == 10
    refused(path, "member 'labels.json' cannot be read")


def test_zip_bomb_text_member_is_refused_without_inflating_it(tmp_path, package_file):
    bomb = b"{" + b" " * (archive.MAX_TEXT_MEMBER_BYTES + 10) + b"}"
    members = {**members_of(package_file), "model_card.md": bomb}
    path = tmp_path / "bomb.recokd.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    assert path.stat().st_size < 1024**2
    refused(path, "model_card.md' is larger than")


def test_labels_that_do_not_match_dataset_json_are_refused(tmp_path, package_file):
    members = edit_json(members_of(package_file), LABELS, lambda v: v["labels"][0].update(name="spleen"))
    refused(write_zip(tmp_path / "lab.recokd.zip", members), "labels.json describes")


@pytest.mark.parametrize(("edit", "match"), [
    (lambda v: v["labels"][0].update(color="red"), "'color' must be three integers"),
    (lambda v: v["labels"][0].update(value=True), "'value' must be a positive integer"),
    (lambda v: v["labels"][0].update(type={"scheme": "SCT"}), "needs text 'scheme', 'code' and 'meaning'"),
    (lambda v: v.update(labels={"a": 1}), "no 'labels' list"),
])
def test_badly_typed_labels_are_refused(tmp_path, package_file, edit, match):
    members = edit_json(members_of(package_file), LABELS, edit)
    refused(write_zip(tmp_path / "bad.recokd.zip", members), match)


def test_badly_typed_inference_json_is_refused(tmp_path, package_file):
    members = edit_json(members_of(package_file), "inference.json", lambda v: v.update(configuration="2d"))
    refused(write_zip(tmp_path / "i.recokd.zip", members), "configuration '2d'")


def test_invalid_json_is_refused(tmp_path, package_file):
    members = {**members_of(package_file), "model_card.json": b"{nope"}
    refused(write_zip(tmp_path / "j.recokd.zip", members), "model_card.json is not valid JSON")


@pytest.mark.parametrize(("field", "value", "match"), [
    ("network_class_name", "os.system", "only classes from dynamic_network_architectures"),
    ("network_class_name", "dynamic_network_architectures.architectures.unet.torch.nn.Sequential",
     "not a network module class"),
])
def test_plans_naming_code_outside_the_allow_list_are_refused(tmp_path, package_file, field, value, match):
    members = edit_json(members_of(package_file), PLANS,
                        lambda p: p["configurations"][CONFIGURATION]["architecture"].update({field: value}))
    refused(write_zip(tmp_path / "code.recokd.zip", members), match)


@pytest.mark.parametrize(("value", "match"), [
    ("subprocess.Popen", "only classes from torch.nn"),
    ("torch.nn.modules.conv.os.system", "not a network module class"),
])
def test_plans_operations_outside_the_allow_list_are_refused(tmp_path, package_file, value, match):
    members = edit_json(members_of(package_file), PLANS, lambda p: p["configurations"][CONFIGURATION]
                        ["architecture"]["arch_kwargs"].update(nonlin=value))
    refused(write_zip(tmp_path / "op.recokd.zip", members), match)
