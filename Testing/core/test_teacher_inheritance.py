"""Teacher-inherited students: structured width pruning, least-squares refit, adapters from the selection."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from test_student_plans import residual_encoder_plans
from tiny_student import tiny_dataset_json, tiny_plans

from recokd.distill.hooks import EncoderFeatureHooks
from recokd.distill.options import KDOptions
from recokd.distill.recokd_loss import ReCoKDLoss
from recokd.errors import RecokdError
from recokd.nnunet.channel_spaces import INPUT, LOGITS, channel_structure
from recokd.nnunet.inheritance import adapters_from_selection, inherit_from_teacher, numpy_rng_left_alone
from recokd.nnunet.network import build_network
from recokd.nnunet.pruning import prune_teacher_into
from recokd.nnunet.student_plans import derive_student_plans

ARCHITECTURES = {
    "PlainConvUNet": lambda: tiny_plans(features=(32, 64, 128)),
    "ResidualEncoderUNet": lambda: residual_encoder_plans(features=(32, 64, 128)),
}


def network(plans: dict, width: Fraction = Fraction(1), deep_supervision: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    if width != 1:
        plans = derive_student_plans(plans, "3d_fullres", width)
    return build_network(plans, tiny_dataset_json(), "3d_fullres", deep_supervision=deep_supervision).eval()


def trained_like(net):
    """Random weights of a realistic spread (He init leaves tiny nets nearly linear) and non-trivial norms."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * (0.5 if "norm" in name else 0.3))
    return net


def calibration(seed: int = 0, batches: int = 2) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 1, 16, 16, 16, generator=generator) for _ in range(batches)]


def logits(net, x):
    out = net(x)
    return out[0] if isinstance(out, (list, tuple)) else out


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("importance", ["activation", "gamma"])
@pytest.mark.parametrize("teacher_ds, student_ds", [(False, True), (True, False)])
def test_width_one_reproduces_the_teachers_logits_exactly(architecture, importance, teacher_ds, student_ds):
    plans = ARCHITECTURES[architecture]()
    teacher = trained_like(network(plans, deep_supervision=teacher_ds))
    student = network(plans, deep_supervision=student_ds, seed=5)
    batches = calibration()
    prune_teacher_into(teacher, student, importance, batches)
    x = calibration(seed=3, batches=1)[0]
    with torch.no_grad():
        assert torch.equal(logits(student, x), logits(teacher, x))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("width", [Fraction(1, 2), Fraction(1, 4)])
@pytest.mark.parametrize("refit", ["least_squares", "none"])
def test_narrower_students_load_strictly_into_the_network_their_plans_build(architecture, width, refit):
    plans = ARCHITECTURES[architecture]()
    teacher = trained_like(network(plans))
    student = network(plans, width, deep_supervision=True)
    inherit_from_teacher(teacher, student, calibration(), "activation", refit)
    fresh = network(plans, width, seed=9)
    fresh.load_state_dict(student.state_dict(), strict=True)
    x = calibration(seed=3, batches=1)[0]
    with torch.no_grad():
        assert torch.isfinite(logits(fresh, x)).all()


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_layer_is_sliced_at_the_kept_channels(architecture):
    plans = ARCHITECTURES[architecture]()
    teacher = trained_like(network(plans))
    student = network(plans, Fraction(1, 2))
    selection, structure = prune_teacher_into(teacher, student, "gamma")
    assert torch.equal(selection[INPUT], torch.arange(1)) and torch.equal(selection[LOGITS], torch.arange(3))
    first = structure.layers[0]
    kept = selection[first.out]
    assert torch.equal(student.get_submodule(first.name).weight, teacher.get_submodule(first.name).weight[kept])
    transposed = next(layer for layer in structure.layers if layer.kind == "transposed")
    below, up = selection[transposed.inputs[0]], selection[transposed.out]
    assert torch.equal(student.get_submodule(transposed.name).weight,
                       teacher.get_submodule(transposed.name).weight[below][:, up])
    # the decoder stage reads [upsampled, skip]: the skip half's indices are offset by the upsampled channels
    merge = next(layer for layer in structure.layers if len(layer.inputs) == 2)
    up_space, skip_space = merge.inputs
    offset = structure.spaces[up_space].size
    expected = torch.cat([selection[up_space], selection[skip_space] + offset])
    teacher_weight = teacher.get_submodule(merge.name).weight[selection[merge.out]][:, expected]
    assert torch.equal(student.get_submodule(merge.name).weight, teacher_weight)


def test_residual_streams_share_one_selection_with_their_shortcut_projection():
    structure = channel_structure(network(residual_encoder_plans(features=(16, 32, 64))))
    projections = [layer for layer in structure.layers if ".skip." in layer.name and layer.kind == "conv"]
    assert projections, "stages 1 and 2 change width: their first block projects the shortcut"
    for projection in projections:
        block = projection.name.split(".skip.")[0]
        last_conv = next(layer for layer in structure.layers if layer.name == f"{block}.conv2.conv")
        assert projection.out == last_conv.out == block
    second_block = next(layer for layer in structure.layers if layer.name == "encoder.stages.1.blocks.1.conv2.conv")
    assert second_block.out == "encoder.stages.1.blocks.0", "identity shortcuts keep the stream's channels"
    # stage 0 keeps the stem's width: its stream is the stem's space
    assert next(layer for layer in structure.layers if layer.name == "encoder.stages.0.blocks.0.conv2.conv").out \
        == "encoder.stem.convs.0"


def test_gamma_importance_keeps_the_channels_with_the_largest_norm_scale():
    plans = tiny_plans(features=(16, 32, 64))
    teacher = trained_like(network(plans))
    norm = teacher.get_submodule("encoder.stages.0.0.convs.0.norm")
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.1, 1.6, 16).flip(0))  # channels 0..7 have the largest |gamma|
    student = network(plans, Fraction(1, 2))
    selection, _ = prune_teacher_into(teacher, student, "gamma")
    assert selection["encoder.stages.0.0.convs.0"].tolist() == list(range(8))


def test_activation_importance_drops_channels_that_carry_no_information_however_large():
    plans = tiny_plans(features=(16, 32, 64))
    teacher = trained_like(network(plans))
    constant = [1, 4, 6, 9, 10, 12, 13, 15]
    with torch.no_grad():  # these channels output a constant after the norm, whatever the input: large, but empty
        teacher.get_submodule("encoder.stages.0.0.convs.1.norm").weight[constant] = 0.0
        teacher.get_submodule("encoder.stages.0.0.convs.1.norm").bias[constant] = 5.0
    student = network(plans, Fraction(1, 2))
    selection, _ = prune_teacher_into(teacher, student, "activation", calibration())
    assert not set(selection["encoder.stages.0.0.convs.1"].tolist()) & set(constant)


def test_activation_importance_needs_calibration_patches():
    plans = tiny_plans(features=(16, 32, 64))
    with pytest.raises(RecokdError, match="calibration"):
        prune_teacher_into(network(plans), network(plans, Fraction(1, 2)), "activation")


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_least_squares_refit_brings_the_student_closer_to_the_teachers_logits(architecture):
    plans = ARCHITECTURES[architecture]()
    teacher = trained_like(network(plans))
    sliced, refitted = network(plans, Fraction(1, 4)), network(plans, Fraction(1, 4))
    batches = calibration(batches=3)
    inherit_from_teacher(teacher, sliced, batches, "activation", "none")
    inheritance = inherit_from_teacher(teacher, refitted, batches, "activation", "least_squares")
    assert inheritance.error_refitted < inheritance.error_sliced
    held_out = calibration(seed=7, batches=1)[0]  # patches the refit never saw
    with torch.no_grad():
        reference = logits(teacher, held_out)
        error = {name: float(((logits(net, held_out) - reference) ** 2).mean())
                 for name, net in (("sliced", sliced), ("refitted", refitted))}
    assert error["refitted"] < 0.8 * error["sliced"]


def test_refit_at_full_width_keeps_the_teachers_function():
    plans = residual_encoder_plans(features=(16, 32, 64))
    teacher = trained_like(network(plans))
    student = network(plans)
    inheritance = inherit_from_teacher(teacher, student, calibration(), "activation", "least_squares")
    assert abs(inheritance.error_refitted) < 1e-5, "the sliced weights already fit: the refit keeps them"
    x = calibration(seed=3, batches=1)[0]
    with torch.no_grad():
        reference = logits(teacher, x)
        assert float((logits(student, x) - reference).abs().max()) < 1e-3 * float(reference.abs().max())


def test_adapters_start_as_the_selection_so_the_feature_terms_start_near_their_floor():
    plans = tiny_plans(features=(16, 32, 64))
    teacher = trained_like(network(plans))
    student = network(plans, Fraction(1, 2))
    inheritance = inherit_from_teacher(teacher, student, calibration(), "activation", "least_squares")
    teacher_hooks, student_hooks = EncoderFeatureHooks(teacher, detach=True), EncoderFeatureHooks(student)
    torch.manual_seed(0)
    random_adapters = ReCoKDLoss(student_hooks.channels, teacher_hooks.channels, KDOptions())
    selected = ReCoKDLoss(student_hooks.channels, teacher_hooks.channels, KDOptions())
    selected.load_state_dict(random_adapters.state_dict())
    adapters_from_selection(selected.adapters, inheritance)
    x = calibration(seed=3, batches=1)[0]
    labels = torch.randint(0, 3, (2, 1, 16, 16, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        teacher(x)
        student(x)
        for k, space in enumerate(inheritance.structure.stage_outputs[:-1]):
            kept = inheritance.selection[space]
            adapted = selected.adapters[k](student_hooks.features[k])
            assert torch.equal(adapted[:, kept], student_hooks.features[k]), "student channel j -> its teacher channel"
            dropped = torch.ones(teacher_hooks.channels[k], dtype=torch.bool)
            dropped[kept] = False
            assert torch.count_nonzero(adapted[:, dropped]) == 0
        terms = {name: loss(student_hooks.features, teacher_hooks.features, [labels])
                 for name, loss in (("random", random_adapters), ("selected", selected))}
    for term in ("fg", "bg"):
        assert terms["selected"][term] < 0.5 * terms["random"][term]


def test_a_student_whose_layers_differ_from_the_teachers_is_refused():
    teacher = network(residual_encoder_plans(features=(16, 32, 64)))
    # at width 1/8 the floor of 8 channels gives stages 0 and 1 equal widths: the student's first block of
    # stage 1 has no shortcut projection where the teacher's has one
    student = network(residual_encoder_plans(features=(16, 32, 64)), Fraction(1, 8))
    with pytest.raises(RecokdError, match="layers differ"):
        prune_teacher_into(teacher, student, "gamma")


def test_calibration_leaves_numpy_s_global_random_stream_as_it_was():
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    with numpy_rng_left_alone(7):
        np.random.rand(100)
    assert np.array_equal(np.random.rand(3), expected)
