"""Normalisation and the activation shared by every block, and when the activation may run in place."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module


class GroupNorm(nn.GroupNorm):
    """torch's GroupNorm, computed on NCHW data on CPU whatever the input's memory layout.

    Why: torch's CPU kernel for channels_last input takes the variance in one pass,
    E[x^2] - E[x]^2, in float32, which cancels when a group's mean is large against its spread, as
    on photographs (GroupNorm(32, 128) on a 488x776 activation of mean 3 and std 0.1: 1.7e-3
    relative from float64, against 5e-7 for the NCHW kernel). Same parameters, same state dict.
    The output is NCHW; elsewhere (CUDA makes its input contiguous itself) the input goes as is.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            x = x.contiguous()  # a no-op for NCHW input: the layout the models run in on CPU
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def Normalize(in_channels: int, num_groups: int = 32) -> GroupNorm:
    """GroupNorm(32, eps=1e-6): the normalisation of every latent-diffusion autoencoder block.

    `num_groups` other than 32 is diffusers' `norm_num_groups`: fewer, wider groups let a spatially
    constant signal (an image's global colour) pass the norm, which one- or two-channel groups erase.
    """
    return GroupNorm(num_groups=num_groups, num_channels=in_channels, eps=1e-6, affine=True)


class ChannelAffine(nn.Module):
    """A GroupNorm with fixed statistics: x * weight + bias per channel, nothing taken from the input.

    Why: GroupNorm normalises with the statistics of the whole image, so a decoder that learned
    colour on 256-pixel crops casts colours on a 4000-pixel image, more the larger it is
    (docs/default-model.md, "Size and colour"). With its statistics fixed, a GroupNorm is this map
    (the means and variances folded into weight and bias: `fold_statistics`), and a decoder made of
    convolutions and these computes each pixel from its neighbourhood alone, at any size, tiled or
    not. Same parameter names and shapes as the GroupNorm it replaces.
    """

    def __init__(self, num_channels: int):
        super().__init__()
        self.num_channels = num_channels
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def extra_repr(self) -> str:
        return str(self.num_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))

    @classmethod
    def fold_statistics(cls, norm: nn.GroupNorm, mean: torch.Tensor, var: torch.Tensor) -> "ChannelAffine":
        """The ChannelAffine that `norm` is when each group's mean and variance are fixed at `mean` and `var` (G,)."""
        affine = cls(norm.num_channels)
        per_group = norm.num_channels // norm.num_groups
        rstd = torch.rsqrt(var.double() + norm.eps).repeat_interleave(per_group)  # (C,)
        scale = norm.weight.double() * rstd
        with torch.no_grad():
            affine.weight.copy_(scale)
            affine.bias.copy_(norm.bias.double() - mean.double().repeat_interleave(per_group) * scale)
        return affine


def fix_group_norms(module: nn.Module) -> None:
    """Replace every GroupNorm inside `module` by a ChannelAffine (weight 1, bias 0: its weights are loaded
    after), in place; attribute names, and so the state dict's keys, stay those of latent-diffusion."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.GroupNorm):
                setattr(parent, name, ChannelAffine(child.num_channels))


def nonlinearity(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Swish / SiLU; `inplace` overwrites x (only where nothing else holds it: see `owns_output`)."""
    return F.silu(x, inplace=inplace)


def owns_output(module: nn.Module) -> bool:
    """True when the tensor `module` just returned may be overwritten in place: no autograd graph is
    recorded and no forward hook (the module's own or a global one) has been handed it.

    Why in place at all: on CPU every fresh full-size tensor costs page faults; reusing the GroupNorm
    output for Swish and the conv output for the residual sum saves that, with bit-identical results.
    """
    return not torch.is_grad_enabled() and not module._forward_hooks and not _module._global_forward_hooks
