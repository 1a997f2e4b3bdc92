"""The CPU fast paths in vaecli/nn give the reference results: sub-pixel upsample, in-place inference, layouts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vaecli.model.blocks import ResnetBlock, Upsample


def _reference_upsample(up: Upsample, x: torch.Tensor) -> torch.Tensor:
    """Nearest x2 then the 3x3 conv, in float64: the definition the fast path must match."""
    w, b = up.conv.weight.double(), up.conv.bias.double()
    return F.conv2d(F.interpolate(x.double(), scale_factor=2.0, mode="nearest"), w, b, padding=1)


@pytest.mark.parametrize("shape", [(2, 32, 7, 5), (1, 32, 1, 1), (1, 32, 6, 9)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_subpixel_upsample_matches_interpolate_then_conv(shape, channels_last):
    torch.manual_seed(0)
    up = Upsample(32, True).eval()
    x = torch.randn(*shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        got = up(x)
    want = _reference_upsample(up, x)
    assert got.shape == want.shape
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5)
    if shape[-1] * shape[-2] > 1:  # a 1x1 input is both layouts at once
        assert got.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_subpixel_kernels_follow_weight_updates():
    """The folded kernels are cached between calls; in-place updates and new weights must refresh them."""
    torch.manual_seed(1)
    up = Upsample(32, True).eval()
    x = torch.randn(1, 32, 5, 4)
    with torch.inference_mode():
        up(x)
    with torch.no_grad():
        up.conv.weight.mul_(-2.0)  # in place: same storage, new version
    with torch.inference_mode():
        assert torch.allclose(up(x).double(), _reference_upsample(up, x), atol=1e-5)
    up.load_state_dict({k: torch.randn_like(v) for k, v in up.state_dict().items()}, assign=True)  # new storage
    with torch.inference_mode():
        assert torch.allclose(up(x).double(), _reference_upsample(up, x), atol=1e-4)


def test_subpixel_upsample_trains():
    torch.manual_seed(2)
    up = Upsample(32, True)
    x = torch.randn(1, 32, 4, 4, requires_grad=True)
    up(x).square().sum().backward()
    ref_x = x.detach().clone().requires_grad_(True)
    ref_w = up.conv.weight.detach().clone().requires_grad_(True)
    F.conv2d(F.interpolate(ref_x, scale_factor=2.0, mode="nearest"), ref_w, up.conv.bias.detach(), padding=1).square().sum().backward()
    assert torch.allclose(x.grad, ref_x.grad, atol=1e-4)
    assert torch.allclose(up.conv.weight.grad, ref_w.grad, atol=1e-3)


@pytest.mark.parametrize("out_channels", [32, 64])
def test_resnet_block_in_place_inference_is_bit_identical(out_channels):
    torch.manual_seed(3)
    block = ResnetBlock(in_channels=32, out_channels=out_channels, temb_channels=0).eval()
    x = torch.randn(2, 32, 9, 7)
    x_before = x.clone()
    with torch.no_grad():  # in-place Swish and residual
        fast = block(x)
    with torch.enable_grad():  # out-of-place: autograd needs the activations
        slow = block(x.requires_grad_(True))
    assert torch.equal(fast, slow.detach())
    assert torch.equal(x.detach(), x_before)  # the caller's input is never overwritten
