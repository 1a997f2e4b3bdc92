"""FLUX.2's autoencoder: AutoencoderKL plus the latent normalisation its transformer expects.

FLUX.2's VAE is an ordinary KL autoencoder (32 latent channels, quant convs) whose weights carry one
more thing: the running statistics of a BatchNorm (eps 1e-4, no affine) over 2x2-patchified latents,
128 channels. The transformer consumes `(patchify(z) - running_mean) / sqrt(running_var + eps)`, and
generation inverts it before decoding (black-forest-labs/flux2 src/flux2/autoencoder.py; diffusers'
AutoencoderKLFlux2 with Flux2Pipeline._patchify_latents and the `bn` statistics).

`encode`/`decode` stay those of AutoencoderKL (raw latents), so tiling and the runner work unchanged;
`normalize_latents`/`denormalize_latents` convert to and from what the transformer sees, exactly
inverse of each other up to float rounding. The statistics are buffers named `bn.running_mean` and
`bn.running_var`, as in both published key layouts, so the weights file fills them.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import VAEConfig
from .autoencoder_kl import AutoencoderKL


def patchify(z: torch.Tensor, patch: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C*pi*pj, H/pi, W/pj); channel index c*pi*pj + i*pj + j (FLUX.2's order)."""
    b, c, h, w = z.shape
    pi, pj = patch
    if h % pi or w % pj:
        raise ValueError(f"latent of {h}x{w} cells cannot be cut into {pi}x{pj} patches")
    z = z.reshape(b, c, h // pi, pi, w // pj, pj)  # (B, C, H/pi, pi, W/pj, pj)
    z = z.permute(0, 1, 3, 5, 2, 4)  # (B, C, pi, pj, H/pi, W/pj)
    return z.reshape(b, c * pi * pj, h // pi, w // pj)  # (B, C*pi*pj, H/pi, W/pj)


def unpatchify(t: torch.Tensor, patch: tuple[int, int]) -> torch.Tensor:
    """(B, C*pi*pj, h, w) -> (B, C, h*pi, w*pj): the exact inverse of `patchify` (a permutation)."""
    b, cp, h, w = t.shape
    pi, pj = patch
    if cp % (pi * pj):
        raise ValueError(f"{cp} channels are not a whole number of {pi}x{pj} patches")
    t = t.reshape(b, cp // (pi * pj), pi, pj, h, w)  # (B, C, pi, pj, h, w)
    t = t.permute(0, 1, 4, 2, 5, 3)  # (B, C, h, pi, w, pj)
    return t.reshape(b, cp // (pi * pj), h * pi, w * pj)  # (B, C, h*pi, w*pj)


class LatentBatchNorm(nn.Module):
    """A BatchNorm without affine used only with its running statistics: a fixed per-channel standardisation.

    Kept as two float buffers rather than nn.BatchNorm2d, whose training mode would update them and
    whose integer `num_batches_tracked` counter means nothing here (the loader drops it).
    """

    def __init__(self, num_features: int, eps: float):
        super().__init__()
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std as (1, C, 1, 1) in `like`'s dtype, the std computed in the buffers' dtype first."""
        mean = self.running_mean.view(1, -1, 1, 1)  # (1, C, 1, 1)
        std = torch.sqrt(self.running_var.view(1, -1, 1, 1) + self.eps)  # (1, C, 1, 1)
        return mean.to(like), std.to(like)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (x - mean) / sqrt(var + eps)."""
        mean, std = self._stats(x)
        return (x - mean) / std

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> y * sqrt(var + eps) + mean."""
        mean, std = self._stats(y)
        return y * std + mean


class AutoencoderKLFlux2(AutoencoderKL):
    """AutoencoderKL with FLUX.2's latent normalisation (see the module docstring)."""

    def __init__(self, config: VAEConfig):
        if config.patch_size is None or config.batch_norm_eps is None:
            raise ValueError(f"{config.name or 'config'}: FLUX.2's autoencoder needs patch_size and batch_norm_eps")
        super().__init__(config)
        pi, pj = config.patch_size
        self.bn = LatentBatchNorm(config.latent_channels * pi * pj, config.batch_norm_eps)

    @property
    def patch_size(self) -> tuple[int, int]:
        return self.config.patch_size

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """raw latents (B, C, H, W) -> what the transformer consumes (B, C*4, H/2, W/2) for 2x2 patches."""
        return self.bn(patchify(z, self.patch_size))

    def denormalize_latents(self, t: torch.Tensor) -> torch.Tensor:
        """The transformer's latents (B, C*4, H/2, W/2) -> raw latents (B, C, H, W), for `decode`."""
        return unpatchify(self.bn.inverse(t), self.patch_size)


def build_autoencoder(config: VAEConfig) -> AutoencoderKL:
    """The model a config describes: FLUX.2's when it carries a latent normalisation, else AutoencoderKL."""
    return AutoencoderKLFlux2(config) if config.patch_size is not None else AutoencoderKL(config)
