"""The building blocks of latent-diffusion's autoencoder: ResnetBlock and the two resamplers.

Parameter names (`norm1`, `conv1`, `nin_shortcut`, `conv`, ...) are those of CompVis/latent-diffusion,
byte for byte, so original checkpoints load with no remapping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .normalization import Normalize, nonlinearity, owns_output

# Which of a 3x3 kernel's taps (columns) fall on which of the two original pixels (rows) for an even
# (0) and an odd (1) output after a nearest x2 upsample: output 2i sees upsampled inputs 2i-1, 2i,
# 2i+1 = original i-1, i, i; output 2i+1 sees i, i, i+1.
_FOLD = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # (parity, 2, 3)
# The same for both axes at once: 3x3 tap (k, l) -> weight in phase (a, b)'s 2x2 tap (i, j)
_TAPS_TO_PHASES = torch.einsum("aik,bjl->klabij", _FOLD, _FOLD).reshape(9, 16)  # (3*3, 2*2*2*2)


def subpixel_kernels(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 conv after nearest x2 as 2x2 convs on the original grid, one per output parity:
    (Co, Ci, 3, 3) -> (4*Co, Ci, 2, 2), phases in (row, col) order (0, 0), (0, 1), (1, 0), (1, 1).

    One small matmul (about 1% of the conv it feeds, for 512 channels), so it runs on every call:
    a cache would go stale when weights change behind autograd's back (`weight.data.copy_()`).
    """
    co, ci = weight.shape[:2]
    k = weight.reshape(co * ci, 9) @ _TAPS_TO_PHASES.to(weight)  # (Co*Ci, 16)
    k = k.view(co, ci, 2, 2, 2, 2).permute(2, 3, 0, 1, 4, 5)  # (a, b, Co, Ci, i, j)
    return k.reshape(4 * co, ci, 2, 2)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv.

    On CPU the pair runs as one 2x2 conv on the low-resolution input with four output phases, then an
    interleave (sub-pixel form): 16 instead of 36 multiply-adds per output pixel and no 4x upsampled
    copy; about 1.35x faster for the SD decoder's upsample convs (docs/benchmarks.md), same result
    up to float rounding. Elsewhere (cuDNN, unmeasured here) the plain form runs.
    """

    def __init__(self, in_channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_conv and x.device.type == "cpu":
            return self._subpixel(x)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.with_conv else x

    def _subpixel(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        co = self.conv.out_channels
        bias = None if self.conv.bias is None else self.conv.bias.repeat(4)  # (4*Co,)
        y = F.conv2d(F.pad(x, (1, 1, 1, 1)), subpixel_kernels(self.conv.weight), bias)  # (B, 4*Co, h+1, w+1)
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = torch.empty((b, co, 2 * h, 2 * w), dtype=y.dtype, device=y.device, memory_format=layout)
        for p, (a, c) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):  # output (2i+a, 2j+c) is y[p][i+a, j+c]
            out[:, :, a::2, c::2] = y[:, p * co : (p + 1) * co, a : a + h, c : c + w]
        return out


class Downsample(nn.Module):
    """Stride-2 3x3 conv after an asymmetric zero pad (right and bottom only), as the checkpoints expect."""

    def __init__(self, in_channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_conv:
            return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class ResnetBlock(nn.Module):
    """GroupNorm-Swish-Conv twice, an optional timestep projection, and a (1x1 or 3x3) shortcut."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int | None = None,
        conv_shortcut: bool = False,
        dropout: float = 0.0,
        temb_channels: int = 512,
        num_groups: int = 32,
    ):
        super().__init__()
        self.in_channels = in_channels
        out_channels = in_channels if out_channels is None else out_channels
        self.out_channels = out_channels
        self.use_conv_shortcut = conv_shortcut

        self.norm1 = Normalize(in_channels, num_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if temb_channels > 0:
            self.temb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = Normalize(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            if conv_shortcut:
                self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
            else:
                self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        # in place only on tensors this block made and handed to no hook; never on x, the caller's
        h = self.conv1(nonlinearity(self.norm1(x), owns_output(self.norm1)))
        if temb is not None:
            h = h + self.temb_proj(nonlinearity(temb))[:, :, None, None]  # (B, C) -> (B, C, 1, 1)
        h = self.conv2(self.dropout(nonlinearity(self.norm2(h), owns_output(self.norm2))))
        if self.in_channels != self.out_channels:
            x = self.conv_shortcut(x) if self.use_conv_shortcut else self.nin_shortcut(x)
        return h.add_(x) if owns_output(self.conv2) else x + h  # same sum either way: IEEE addition commutes
