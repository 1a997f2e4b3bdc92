"""AutoencoderKL: Encoder + Decoder + optional quant convs, and the latent convention in one place."""

from __future__ import annotations

import torch
from torch import nn

from ..config import VAEConfig
from ..errors import ConfigError
from .distributions import DiagonalGaussianDistribution
from .encoder_decoder import Decoder, Encoder


class AutoencoderKL(nn.Module):
    """The KL-regularised first stage of latent diffusion.

    Pixels are in [-1, 1]. `encode` returns the posterior over *raw* latents; `scale_latents` maps
    raw latents to the convention the diffusion model sees, `scaling_factor * (z - shift_factor)`,
    and `unscale_latents` maps back. Models without a published scale leave latents unscaled.
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        if not config.double_z:
            raise ConfigError("double_z=False: a KL autoencoder's encoder must emit mean and logvar")
        self.config = config
        self.encoder = Encoder(**config.ddconfig())
        self.decoder = Decoder(**config.ddconfig())
        if config.embed_dim is not None:
            self.quant_conv = nn.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1)
            self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        else:
            self.quant_conv = self.post_quant_conv = None

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def encode(self, x: torch.Tensor) -> DiagonalGaussianDistribution:
        """(B, 3, H, W) in [-1, 1] -> posterior over raw latents (B, C, H/f, W/f)."""
        moments = self.encoder(x)  # (B, 2*z_channels, h, w)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)  # (B, 2*embed_dim, h, w)
        return DiagonalGaussianDistribution(moments.contiguous())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents (B, C, h, w) -> pixels (B, 3, h*f, w*f), nominally in [-1, 1]."""
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z).contiguous()

    def forward(self, x: torch.Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None):
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior

    def scale_latents(self, z: torch.Tensor) -> torch.Tensor:
        """raw latents -> diffusion-model latents: scaling_factor * (z - shift_factor)."""
        scale = self.config.scaling_factor
        if scale is None:
            return z
        return (z - self.config.shift_factor) * scale

    def unscale_latents(self, z: torch.Tensor) -> torch.Tensor:
        """diffusion-model latents -> raw latents: z / scaling_factor + shift_factor."""
        scale = self.config.scaling_factor
        if scale is None:
            return z
        return z / scale + self.config.shift_factor
