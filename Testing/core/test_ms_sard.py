"""MS-SARD: class-aware masks, attention maps and the region/attention terms of one stage."""

import pytest
import torch

from recokd.distill.masks import class_balanced_masks, labels_at
from recokd.distill.ms_sard import MSSARDLoss, attention_maps
from recokd.errors import RecokdError


def small_and_large_class_labels() -> torch.Tensor:
    """(1, 1, 24, 24, 24): class 1 has 10 voxels, class 2 has 10,000, the rest is background."""
    labels = torch.zeros(24**3)
    labels[:10] = 1
    labels[100:10_100] = 2
    return labels.view(1, 1, 24, 24, 24)


def test_every_present_class_has_total_mask_weight_one_whatever_its_size():
    labels = small_and_large_class_labels().flatten(1)
    foreground, background = class_balanced_masks(small_and_large_class_labels())
    assert foreground[labels == 1].sum() == pytest.approx(1.0)
    assert foreground[labels == 2].sum() == pytest.approx(1.0)
    assert torch.all(foreground[labels == 1] == 0.1)
    assert background.sum() == pytest.approx(1.0)
    assert torch.all(foreground[labels == 0] == 0) and torch.all(background[labels > 0] == 0)


def test_masks_are_normalised_per_sample():
    labels = torch.zeros(2, 1, 4, 4, 4, dtype=torch.long)
    labels[0, 0, :1] = 1
    labels[1, 0, :3] = 1
    foreground, background = class_balanced_masks(labels)
    assert torch.allclose(foreground.sum(1), torch.ones(2))
    assert torch.allclose(background.sum(1), torch.ones(2))


def test_ignored_and_negative_voxels_are_in_neither_mask_nor_any_class_size():
    labels = torch.tensor([[0, 0, 1, 1, 3, 3, -1, 2]])
    foreground, background = class_balanced_masks(labels, ignore_label=3)
    assert torch.all(foreground[0, 4:7] == 0) and torch.all(background[0, 4:7] == 0)
    assert foreground.tolist() == [[0, 0, 0.5, 0.5, 0, 0, 0, 1.0]]
    assert background.tolist() == [[0.5, 0.5, 0, 0, 0, 0, 0, 0]]


def test_a_known_class_count_gives_the_same_masks_without_reading_the_labels_first():
    labels = torch.randint(0, 4, (3, 1, 6, 7, 5))
    labels[1] = 0  # a sample without foreground
    for ignore in (None, 3):
        expected = class_balanced_masks(labels, ignore_label=ignore)
        for given, wanted in zip(class_balanced_masks(labels, ignore_label=ignore, num_classes=4), expected):
            assert torch.equal(given, wanted)


def test_labels_beyond_the_known_classes_share_one_extra_class_instead_of_failing():
    labels = torch.tensor([[0, 0, 1, 7, 9, 9]])
    foreground, background = class_balanced_masks(labels, num_classes=2)
    assert torch.allclose(foreground, torch.tensor([[0, 0, 1.0, 1 / 3, 1 / 3, 1 / 3]]))
    assert background.tolist() == [[0.5, 0.5, 0, 0, 0, 0]]


def test_attention_maps_average_one_and_are_uniform_for_uniform_features():
    spatial, channel = attention_maps(torch.randn(2, 3, 4, 5, 6), temperature=0.5)
    assert spatial.shape == (2, 120) and channel.shape == (2, 3)
    assert torch.allclose(spatial.mean(1), torch.ones(2)) and torch.allclose(channel.mean(1), torch.ones(2))
    spatial, channel = attention_maps(-torch.ones(1, 3, 4, 4, 4), temperature=0.5)
    assert torch.allclose(spatial, torch.ones_like(spatial)) and torch.allclose(channel, torch.ones_like(channel))


def test_loss_is_zero_when_student_equals_teacher():
    features = torch.randn(2, 4, 6, 6, 6)
    terms = MSSARDLoss()(features.clone(), features, torch.randint(0, 3, (2, 1, 6, 6, 6)))
    assert all(terms[name] == 0 for name in ("fg", "bg", "att"))


def test_an_error_on_a_10_voxel_class_costs_as_much_as_on_a_10000_voxel_class():
    labels = small_and_large_class_labels()
    teacher = torch.ones(1, 2, 24, 24, 24)  # uniform teacher: S_t = A_t = 1 everywhere
    fg_losses = []
    for cls in (1, 2):
        student = teacher + (labels == cls).float()
        fg_losses.append(MSSARDLoss()(student, teacher, labels)["fg"])
    # error 1 on one of two present classes, each of total weight 1: 1 / 2
    assert fg_losses[0].item() == pytest.approx(0.5) and fg_losses[1].item() == pytest.approx(0.5)


def test_region_and_attention_terms_match_the_square_root_formula():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4)
    labels = torch.randint(0, 3, (2, 1, 4, 4, 4))
    terms = MSSARDLoss(temperature=0.5)(student, teacher, labels)

    spatial_t, channel_t = attention_maps(teacher, 0.5)
    spatial_s, channel_s = attention_maps(student, 0.5)
    scale = (spatial_t[:, None, :] * channel_t[:, :, None]).sqrt()  # (B, C, X)
    squared = (scale * student.flatten(2) - scale * teacher.flatten(2)).pow(2).sum(1)  # (B, X)
    for name, mask in zip(("fg", "bg"), class_balanced_masks(labels)):
        expected = ((mask * squared).sum(1) / (3 * mask.sum(1))).mean()
        assert terms[name].item() == pytest.approx(expected.item(), rel=1e-5)
    expected_att = (channel_s - channel_t).abs().mean() + (spatial_s - spatial_t).abs().mean()
    assert terms["att"].item() == pytest.approx(expected_att.item(), rel=1e-5)


def test_patch_without_foreground_gives_zero_fg_and_finite_gradients():
    student = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    terms = MSSARDLoss()(student, torch.randn(2, 3, 4, 4, 4), torch.zeros(2, 1, 4, 4, 4))
    assert terms["fg"] == 0
    assert torch.isfinite(terms["bg"]) and terms["bg"] > 0
    sum(terms.values()).backward()
    assert torch.isfinite(student.grad).all()


def test_absent_class_contributes_nothing():
    torch.manual_seed(0)
    student, teacher = torch.randn(1, 3, 4, 4, 4), torch.randn(1, 3, 4, 4, 4)
    labels = torch.randint(0, 2, (1, 1, 4, 4, 4))
    with_gap = MSSARDLoss()(student, teacher, labels * 2)  # classes {0, 2}: class 1 absent
    compact = MSSARDLoss()(student, teacher, labels)  # classes {0, 1}
    for name in ("fg", "bg", "att"):
        assert torch.isfinite(with_gap[name])
        assert with_gap[name].item() == pytest.approx(compact[name].item())


def test_labels_at_picks_the_matching_target_or_resamples_the_finest_nearest_neighbour():
    fine = torch.randint(0, 4, (1, 1, 8, 8, 8)).float()
    coarse = torch.randint(0, 4, (1, 1, 4, 4, 4)).float()
    assert labels_at([fine, coarse], (4, 4, 4)) is coarse
    resampled = labels_at([fine, coarse], (2, 2, 2))
    assert resampled.shape == (1, 1, 2, 2, 2)
    assert set(resampled.unique().tolist()) <= set(fine.unique().tolist())


def test_region_based_targets_are_refused_with_a_clear_error():
    with pytest.raises(RecokdError, match="region-based"):
        labels_at([torch.zeros(1, 2, 4, 4, 4)], (4, 4, 4))
