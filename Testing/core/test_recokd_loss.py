"""ReCoKDLoss: adapters + MS-SARD + MS-CA over the distilled stages, weighted and summed."""

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from recokd.distill.hooks import EncoderFeatureHooks
from recokd.distill.masks import labels_at
from recokd.distill.ms_sard import MSSARDLoss
from recokd.distill.options import KDOptions
from recokd.distill.recokd_loss import ReCoKDLoss
from recokd.distill.schedule import stage_weights
from recokd.errors import RecokdError

TERMS = ("fg", "bg", "att", "ctx")
SHAPES = [(2, 4, 8, 8, 8), (2, 8, 4, 4, 4)]


def batch(seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Teacher features and deep-supervision targets for two stages of 8^3 and 4^3 voxels."""
    generator = torch.Generator().manual_seed(seed)
    features = [torch.randn(shape, generator=generator) for shape in SHAPES]
    targets = [torch.randint(0, 3, (2, 1, *shape[2:]), generator=generator).float() for shape in SHAPES]
    return features, targets


def identity_adapters(loss: ReCoKDLoss) -> ReCoKDLoss:
    with torch.no_grad():
        for adapter in loss.adapters:
            adapter.linear.weight.copy_(torch.eye(adapter.linear.in_features))
            adapter.linear.bias.zero_()
    return loss


def tiny_unet(features_per_stage: tuple[int, ...]) -> PlainConvUNet:
    return PlainConvUNet(
        1, 3, features_per_stage, nn.Conv3d, 3, ((1, 1, 1), (2, 2, 2), (2, 2, 2)), 1, 3, 1, nonlin=nn.ReLU
    )


@pytest.mark.parametrize("form", ["gc", "affinity"])
def test_every_term_is_zero_when_student_equals_teacher_through_identity_adapters(form):
    loss = identity_adapters(ReCoKDLoss([4, 8], [4, 8], KDOptions(ms_ca=form)))
    teacher, targets = batch()
    terms = loss([f.clone() for f in teacher], teacher, targets)
    assert set(terms) == {*TERMS, "total"}
    assert all(terms[name].item() == pytest.approx(0.0, abs=1e-12) for name in terms)


def test_terms_are_stage_weighted_sums_scaled_by_their_options():
    options = KDOptions(fg_weight=2.0, bg_weight=0.5, att_weight=3.0, ms_ca="affinity", alpha=0.5)
    loss = ReCoKDLoss([3, 5], [4, 8], options)
    teacher, targets = batch()
    student = [torch.randn(2, 3, 8, 8, 8), torch.randn(2, 5, 4, 4, 4)]
    terms = loss(student, teacher, targets)

    weights = stage_weights(2, alpha=0.5)
    per_stage = [
        MSSARDLoss(options.attention_temperature)(loss.adapters[k](student[k]), teacher[k], targets[k])
        for k in range(2)
    ]
    for name, factor in (("fg", 2.0), ("bg", 0.5), ("att", 3.0)):
        expected = factor * sum(weights[k] * per_stage[k][name] for k in range(2))
        assert terms[name].item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["total"].item() == pytest.approx(sum(terms[name].item() for name in TERMS), rel=1e-6)


def test_gradients_reach_student_adapters_and_context_blocks_but_not_the_teacher():
    loss = ReCoKDLoss([4, 8], [4, 8], KDOptions(ms_ca="gc"))
    teacher, targets = batch()
    teacher = [f.requires_grad_() for f in teacher]  # detached inside, whatever the caller does
    student = [torch.randn(shape, requires_grad=True) for shape in SHAPES]
    loss(student, teacher, targets)["total"].backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in student)
    assert all(f.grad is None for f in teacher)
    for module in (*loss.adapters, *(m.student_block for m in loss.ms_ca), *(m.teacher_block for m in loss.ms_ca)):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_gradients_flow_from_hooked_features_into_the_student_network_and_never_a_frozen_teacher():
    torch.manual_seed(0)
    student_net, teacher_net = tiny_unet((2, 4, 8)), tiny_unet((4, 8, 16)).eval().requires_grad_(False)
    image = torch.randn(1, 1, 16, 16, 16)
    targets = [torch.randint(0, 3, (1, 1, 16, 16, 16)).float()]  # coarser stages resample it
    with EncoderFeatureHooks(student_net) as student, EncoderFeatureHooks(teacher_net, detach=True) as teacher:
        loss = ReCoKDLoss(student.channels, teacher.channels, KDOptions(ms_ca="affinity", affinity_grid=4))
        student_net(image)
        teacher_net(image)
        loss(student.features, teacher.features, targets)["total"].backward()
    assert all(p.grad is not None for p in student_net.encoder.stages[:-1].parameters())
    assert all(p.grad is None for p in teacher_net.parameters())


@pytest.mark.parametrize("form", ["gc", "affinity"])
def test_runs_in_float32_under_autocast(form):
    loss = ReCoKDLoss([4, 8], [4, 8], KDOptions(ms_ca=form))
    teacher, targets = batch()
    student, _ = batch(seed=1)
    student, teacher = [f.bfloat16() for f in student], [f.bfloat16() for f in teacher]
    reference = loss([f.float() for f in student], [f.float() for f in teacher], targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = loss(student, teacher, targets)
    for name, value in terms.items():
        assert value.dtype == torch.float32 and torch.isfinite(value)
        assert value.item() == pytest.approx(reference[name].item(), rel=1e-5)


@pytest.mark.parametrize("form", ["gc", "affinity"])
def test_a_few_optimiser_steps_on_a_fixed_batch_reduce_the_kd_loss(form):
    torch.manual_seed(0)
    loss = ReCoKDLoss([3, 5], [4, 8], KDOptions(ms_ca=form))
    teacher, targets = batch()
    student = [nn.Parameter(torch.randn(2, 3, 8, 8, 8)), nn.Parameter(torch.randn(2, 5, 4, 4, 4))]
    optimiser = torch.optim.Adam([*student, *loss.parameters()], lr=0.1)
    history = []
    for _ in range(10):
        optimiser.zero_grad()
        total = loss(student, teacher, targets)["total"]
        total.backward()
        optimiser.step()
        history.append(total.item())
    assert history[-1] < 0.75 * history[0]


def test_works_on_2d_features():
    loss = ReCoKDLoss([2], [4], KDOptions())
    teacher = torch.randn(2, 4, 8, 8)
    terms = loss([torch.randn(2, 2, 8, 8)], [teacher], [torch.randint(0, 3, (2, 1, 8, 8))])
    assert all(torch.isfinite(value) for value in terms.values()) and terms["total"] > 0


def test_ignored_voxels_are_in_neither_region_term():
    loss = ReCoKDLoss([4, 8], [4, 8], KDOptions(), ignore_label=2)
    teacher, _ = batch()
    terms = loss([torch.randn(shape) for shape in SHAPES], teacher, [torch.full((2, 1, 8, 8, 8), 2.0)])
    assert terms["fg"] == 0 and terms["bg"] == 0 and terms["att"] > 0


def test_stage_count_and_size_mismatches_raise_a_clear_error():
    with pytest.raises(RecokdError, match="same, non-zero number of encoder stages"):
        ReCoKDLoss([4, 8], [4, 8, 16], KDOptions())
    loss = ReCoKDLoss([4], [4], KDOptions())
    with pytest.raises(RecokdError, match="differ in size"):
        loss([torch.randn(1, 4, 8, 8, 8)], [torch.randn(1, 4, 4, 4, 4)], [torch.zeros(1, 1, 8, 8, 8)])


def test_labels_for_each_stage_come_from_the_matching_target():
    loss = ReCoKDLoss([4, 8], [4, 8], KDOptions())
    teacher, targets = batch()
    student, _ = batch(seed=1)
    resampled = [targets[0], labels_at(targets[:1], SHAPES[1][2:])]
    assert loss(student, teacher, targets)["fg"] != loss(student, teacher, resampled)["fg"]
