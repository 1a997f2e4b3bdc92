"""Normalisation and the activation shared by every block."""

from __future__ import annotations

import torch
from torch import nn


def Normalize(in_channels: int, num_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm(32, eps=1e-6): the normalisation of every latent-diffusion autoencoder block.

    `num_groups` other than 32 is diffusers' `norm_num_groups`: fewer, wider groups let a spatially
    constant signal (an image's global colour) pass the norm, which one- or two-channel groups erase.
    """
    return nn.GroupNorm(num_groups=num_groups, num_channels=in_channels, eps=1e-6, affine=True)


def nonlinearity(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Swish / SiLU; `inplace` overwrites x (only where autograd does not need it: see `inference_inplace`)."""
    return torch.nn.functional.silu(x, inplace=inplace)


def inference_inplace() -> bool:
    """True when no graph is being recorded, so activations may be overwritten in place.

    Why: on CPU every fresh full-size tensor costs page faults; reusing the GroupNorm output for
    Swish and the conv output for the residual sum saves that, with bit-identical results.
    """
    return not torch.is_grad_enabled()
