"""Logit KD baseline: temperature-scaled KL(teacher || student)."""

import pytest
import torch
import torch.nn.functional as F

from recokd.distill.logit_kd import LogitKDLoss


def test_zero_for_equal_logits_and_for_logits_equal_up_to_a_per_voxel_shift():
    teacher = torch.randn(2, 3, 4, 4, 4)
    assert LogitKDLoss()(teacher.clone(), teacher) == 0
    shifted = teacher + torch.randn(2, 1, 4, 4, 4)  # same softmax
    assert LogitKDLoss()(shifted, teacher).item() == pytest.approx(0.0, abs=1e-6)


def test_positive_for_different_logits():
    assert LogitKDLoss()(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)) > 0


def test_is_kl_teacher_to_student_times_t_squared_mean_over_voxels():
    student, teacher = torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4)
    p_teacher = F.softmax(teacher / 2.0, dim=1)
    kl = (p_teacher * (p_teacher.log() - F.log_softmax(student / 2.0, dim=1))).sum(1).mean()
    assert LogitKDLoss(temperature=2.0)(student, teacher).item() == pytest.approx(4.0 * kl.item(), rel=1e-5)


def test_temperature_scales_the_loss_by_t_squared():
    student, teacher = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    hot = LogitKDLoss(temperature=4.0)(student, teacher)
    cold = LogitKDLoss(temperature=1.0)(student / 4.0, teacher / 4.0)
    assert hot.item() == pytest.approx(16.0 * cold.item(), rel=1e-5)


def test_gradient_reaches_the_student_and_not_the_teacher():
    student = torch.randn(1, 3, 4, 4, requires_grad=True)
    teacher = torch.randn(1, 3, 4, 4, requires_grad=True)
    LogitKDLoss()(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_runs_in_float32_under_autocast_and_for_half_precision_inputs():
    student, teacher = torch.randn(1, 3, 4, 4).bfloat16(), torch.randn(1, 3, 4, 4).bfloat16()
    reference = LogitKDLoss()(student.float(), teacher.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = LogitKDLoss()(student, teacher)
    for loss in (under_autocast, LogitKDLoss()(student, teacher)):
        assert loss.dtype == torch.float32
        assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
