"""EncoderFeatureHooks on real (tiny) dynamic_network_architectures U-Nets."""

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from recokd.distill.hooks import EncoderFeatureHooks, unwrap_network
from recokd.errors import RecokdError

COMMON = {
    "input_channels": 1,
    "n_stages": 3,
    "features_per_stage": (4, 8, 16),
    "conv_op": nn.Conv3d,
    "kernel_sizes": 3,
    "strides": ((1, 1, 1), (2, 2, 2), (2, 2, 2)),
    "num_classes": 3,
    "n_conv_per_stage_decoder": 1,
    "norm_op": nn.InstanceNorm3d,
    "norm_op_kwargs": {"affine": True},
    "nonlin": nn.LeakyReLU,
}


def tiny_unet(kind: str) -> nn.Module:
    if kind == "plain":
        return PlainConvUNet(n_conv_per_stage=1, **COMMON)
    return ResidualEncoderUNet(n_blocks_per_stage=1, **COMMON)


@pytest.fixture(params=["plain", "resenc"])
def network(request) -> nn.Module:
    torch.manual_seed(0)
    return tiny_unet(request.param)


def test_captures_every_stage_but_the_bottleneck_at_the_documented_sizes(network):
    hooks = EncoderFeatureHooks(network)
    assert hooks.channels == [4, 8]
    assert hooks.features == []
    network(torch.randn(2, 1, 16, 16, 16))
    # spatial size = patch / prod(strides[:i+1])
    assert [tuple(f.shape) for f in hooks.features] == [(2, 4, 16, 16, 16), (2, 8, 8, 8, 8)]


def test_features_are_replaced_not_accumulated_on_the_next_forward(network):
    hooks = EncoderFeatureHooks(network)
    network(torch.randn(1, 1, 16, 16, 16))
    first = hooks.features
    network(torch.randn(1, 1, 16, 16, 16))
    assert len(hooks.features) == 2
    assert not torch.equal(hooks.features[0], first[0])


def test_detach_controls_whether_features_carry_gradients(network):
    with EncoderFeatureHooks(network) as live, EncoderFeatureHooks(network, detach=True) as detached:
        network(torch.randn(1, 1, 16, 16, 16))
    assert all(f.requires_grad for f in live.features)
    assert not any(f.requires_grad for f in detached.features)


def test_removed_hooks_capture_nothing_more(network):
    with EncoderFeatureHooks(network) as hooks:
        network(torch.randn(1, 1, 16, 16, 16))
    kept = hooks.features
    network(torch.randn(1, 1, 16, 16, 16))
    assert hooks.features is kept


def test_wrapped_networks_are_hooked_on_the_inner_network():
    network = tiny_unet("plain")
    for wrapped in (nn.DataParallel(network), torch.compile(network), nn.DataParallel(torch.compile(network))):
        assert unwrap_network(wrapped) is network
    with EncoderFeatureHooks(nn.DataParallel(network)) as hooks:
        nn.DataParallel(network)(torch.randn(1, 1, 16, 16, 16))
    assert len(hooks.features) == 2


def test_works_on_a_2d_network():
    network = PlainConvUNet(
        1, 3, (4, 8, 16), nn.Conv2d, 3, ((1, 1), (2, 2), (2, 2)), 1, 3, 1, norm_op=nn.InstanceNorm2d, nonlin=nn.ReLU
    )
    with EncoderFeatureHooks(network) as hooks:
        network(torch.randn(1, 1, 16, 16))
    assert [tuple(f.shape) for f in hooks.features] == [(1, 4, 16, 16), (1, 8, 8, 8)]


def test_a_network_without_an_nnunet_encoder_is_refused_with_a_clear_error():
    with pytest.raises(RecokdError, match="encoder"):
        EncoderFeatureHooks(nn.Conv3d(1, 1, 1))
