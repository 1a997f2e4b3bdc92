"""The CPU fast paths in vaecli.model give the reference results: sub-pixel upsample, in-place inference, layouts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vaecli.config import VAEConfig
from vaecli.model import AutoencoderKL
from vaecli.model.blocks import ResnetBlock, Upsample
from vaecli.model.normalization import Normalize


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
    """The folded kernels must follow every way weights change: in place, new storage, and
    `weight.data.copy_()`, which bumps no version counter (the usual way to swap in EMA weights)."""
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
    up.conv.weight.data.copy_(torch.randn_like(up.conv.weight))  # same storage, same version
    with torch.inference_mode():
        assert torch.allclose(up(x).double(), _reference_upsample(up, x), atol=1e-4)


def test_ema_weights_swapped_in_by_data_copy_decode_as_a_fresh_model():
    """Decode, swap in other weights with `p.data.copy_()`, decode again: the result is the other
    model's, as if freshly built (a stale sub-pixel kernel was off by up to 27 here)."""
    config = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, embed_dim=4)
    torch.manual_seed(4)
    live, ema = AutoencoderKL(config).eval(), AutoencoderKL(config).eval()
    z = torch.randn(1, 4, 12, 10)
    with torch.inference_mode():
        live.decode(z)
    with torch.no_grad():
        for p, q in zip(live.parameters(), ema.parameters()):
            p.data.copy_(q.data)
    with torch.inference_mode():
        got, want = live.decode(z), ema.decode(z)
    assert torch.allclose(got, want, rtol=0, atol=1e-6), (got - want).abs().max()


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


def _record_outputs(modules) -> tuple[list, list]:
    """Forward hooks that keep each output tensor and a copy taken when the hook ran."""
    handed, copies = [], []

    def hook(module, args, output):
        handed.append(output)
        copies.append(output.clone())

    return [m.register_forward_hook(hook) for m in modules], (handed, copies)


@pytest.mark.parametrize("out_channels", [32, 64])
def test_tensors_handed_to_forward_hooks_are_not_rewritten(out_channels):
    """In-place Swish must not rewrite the GroupNorm output a hook already received, nor the
    residual sum the conv output a hook received; the block's result stays the same."""
    torch.manual_seed(5)
    block = ResnetBlock(in_channels=32, out_channels=out_channels, temb_channels=0).eval()
    x = torch.randn(2, 32, 9, 7)
    with torch.inference_mode():
        want = block(x)
    handles, (handed, copies) = _record_outputs([block.norm1, block.norm2, block.conv2])
    with torch.inference_mode():
        got = block(x)
    for h in handles:
        h.remove()
    assert len(handed) == 3
    for seen, at_hook_time in zip(handed, copies):
        assert torch.equal(seen, at_hook_time)
    assert torch.equal(got, want)


def test_global_forward_hooks_also_keep_their_tensors():
    torch.manual_seed(6)
    block = ResnetBlock(in_channels=32, out_channels=32, temb_channels=0).eval()
    handed, copies = [], []

    def hook(module, args, output):
        if module is block.norm1:
            handed.append(output)
            copies.append(output.clone())

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        with torch.inference_mode():
            block(torch.randn(1, 32, 6, 6))
    finally:
        handle.remove()
    assert len(handed) == 1 and torch.equal(handed[0], copies[0])


def test_group_norm_of_channels_last_input_matches_float64():
    """GroupNorm(32, 128) on a 488x776 activation of mean 3 and std 0.1, as photographs give: torch's
    CPU kernel for channels_last input took the variance in one pass and was 1.7e-3 off float64."""
    torch.manual_seed(7)
    norm = Normalize(128, 32)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.3)
        norm.bias.normal_(0.0, 0.3)
    x = torch.randn(1, 128, 488, 776) * 0.1 + 3
    with torch.no_grad():
        want = F.group_norm(x.double(), 32, norm.weight.double(), norm.bias.double(), norm.eps)  # NCHW
    for layout in (torch.contiguous_format, torch.channels_last):
        with torch.inference_mode():
            got = norm(x.contiguous(memory_format=layout))
        assert float((got.double() - want).abs().max() / want.abs().max()) < 1e-5, layout
