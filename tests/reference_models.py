"""Shared test material: random diffusers and vaecli autoencoders (diffusers: the independent reference) and a wide real photograph."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def random_diffusers(class_name: str = "AutoencoderKL", seed: int = 0, **kwargs):
    """A diffusers autoencoder with every tensor perturbed (default init leaves norms at 1/0, hiding swaps).

    FLUX.2's BatchNorm statistics get random values too (mean around 0, variance in [0.5, 1.5]).
    """
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(seed)
    model = getattr(diffusers, class_name)(**kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        bn = getattr(model, "bn", None)
        if bn is not None:
            bn.running_mean.copy_(torch.randn_like(bn.running_mean) * 0.3)
            bn.running_var.copy_(torch.rand_like(bn.running_var) + 0.5)
    return model


def random_vaecli(config, *, norm_weight: tuple[float, float], norm_bias: tuple[float, float], conv_bias_std: float | None = None, seed: int = 0):
    """vaecli's AutoencoderKL with random weights whose GroupNorm affines are drawn as asked (a fresh
    model's 1/0 affines hide wrong statistics): weights uniform in `norm_weight` (low, high), biases
    normal with `norm_bias` (mean, std), and conv biases normal(0, `conv_bias_std`) when given."""
    from vaecli.model import AutoencoderKL
    from vaecli.model.normalization import ChannelAffine

    torch.manual_seed(seed)
    vae = AutoencoderKL(config).eval()
    with torch.no_grad():
        for m in vae.modules():
            if isinstance(m, (torch.nn.GroupNorm, ChannelAffine)):
                m.weight.uniform_(*norm_weight)
                m.bias.normal_(*norm_bias)
            elif conv_bias_std is not None and isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0.0, conv_bias_std)
    return vae


def wide_photo(height: int = 301, width: int = 1029) -> np.ndarray:
    """A real photograph over 1024 px wide, (height, width, 3) uint8, no resampling: skimage's
    astronaut and coffee side by side (at most 400 x 1112)."""
    data = pytest.importorskip("skimage.data")
    left, right = data.astronaut(), data.coffee()  # (512, 512, 3), (400, 600, 3)
    both = np.concatenate([left[:400], right], axis=1)  # (400, 1112, 3)
    assert height <= both.shape[0] and width <= both.shape[1]
    return np.ascontiguousarray(both[:height, :width])


def to_pixels(photo: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1], as vaecli reads images."""
    return torch.from_numpy(photo).permute(2, 0, 1)[None].double().div(255).mul(2).sub(1).float()
