"""MS-CA: global-context blocks and the pooled voxel-affinity form of one stage."""

import pytest
import torch

from recokd.distill.ms_ca import GlobalContextBlock, MSCALoss, pooled_affinity


def randomise(module: torch.nn.Module) -> None:
    """Non-zero weights everywhere, including the zero-initialised last layer."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_()


def test_new_global_context_block_is_the_identity():
    features = torch.randn(2, 4, 5, 5, 5)
    assert torch.equal(GlobalContextBlock(4)(features), features)


def test_global_context_block_adds_one_patch_wide_vector_to_every_voxel():
    block = GlobalContextBlock(4)
    randomise(block)
    features = torch.randn(2, 4, 5, 5, 5)
    shift = (block(features) - features).flatten(2)
    assert shift.abs().max() > 0
    assert torch.allclose(shift, shift[:, :, :1].expand_as(shift), atol=1e-6)


def test_gc_form_is_zero_for_equal_features_with_fresh_blocks():
    features = torch.randn(2, 4, 5, 5, 5)
    assert MSCALoss(4, "gc")(features.clone(), features) == 0


def test_gc_form_is_zero_for_equal_features_when_the_blocks_share_weights():
    loss = MSCALoss(4, "gc")
    randomise(loss.student_block)
    features = torch.randn(2, 4, 5, 5, 5)
    randomise(loss.teacher_block)
    assert loss(features.clone(), features) > 0
    loss.teacher_block.load_state_dict(loss.student_block.state_dict())
    assert loss(features.clone(), features) == 0


def test_affinity_form_is_zero_for_equal_or_rescaled_features_and_positive_otherwise():
    teacher = torch.randn(2, 4, 6, 6, 6)
    loss = MSCALoss(4, "affinity", grid=3)
    assert loss(teacher.clone(), teacher) == 0
    assert loss(3.0 * teacher, teacher).item() == pytest.approx(0.0, abs=1e-10)
    assert loss(torch.randn(2, 4, 6, 6, 6), teacher) > 0


def test_affinity_matrix_is_cosine_similarity_of_pooled_voxels():
    features = torch.randn(1, 4, 16, 16, 16)
    affinity = pooled_affinity(features, grid=4)
    assert affinity.shape == (1, 64, 64)
    assert torch.allclose(affinity.diagonal(dim1=1, dim2=2), torch.ones(1, 64), atol=1e-5)
    assert torch.allclose(affinity, affinity.transpose(1, 2))
    assert pooled_affinity(torch.randn(1, 4, 2, 16, 16), grid=4).shape == (1, 32, 32)


@pytest.mark.parametrize("grid", [2, 4])
def test_affinity_form_never_holds_more_than_a_grid_cubed_square_matrix(grid):
    """Everything autograd keeps is no larger than the features or a grid^3 x grid^3 matrix."""
    features = torch.randn(1, 4, 16, 16, 16)
    student = features.clone().requires_grad_()
    saved_sizes = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved_sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        MSCALoss(4, "affinity", grid=grid)(student, torch.randn_like(features)).backward()
    assert saved_sizes and max(saved_sizes) <= max(features.numel(), grid**6)


@pytest.mark.parametrize("form", ["gc", "affinity"])
def test_both_forms_work_on_2d_features(form):
    loss = MSCALoss(4, form, grid=4)
    features = torch.randn(2, 4, 8, 8)
    assert loss(features.clone(), features) == 0
    assert loss(torch.randn(2, 4, 8, 8), features) > 0


def test_unknown_form_is_refused():
    with pytest.raises(ValueError, match="form"):
        MSCALoss(4, "nonlocal")
