"""Normalisation and the activation shared by every block."""

from __future__ import annotations

import torch
from torch import nn


def Normalize(in_channels: int, num_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm(32, eps=1e-6): the normalisation of every latent-diffusion autoencoder block."""
    return nn.GroupNorm(num_groups=num_groups, num_channels=in_channels, eps=1e-6, affine=True)


def nonlinearity(x: torch.Tensor) -> torch.Tensor:
    """Swish / SiLU."""
    return torch.nn.functional.silu(x)
