"""Encoder, Decoder, ResnetBlock, resampling and the U-Net `Model` of latent-diffusion.

Parameter names (`down[i].block[j]`, `mid.attn_1`, `nin_shortcut`, `norm_out`, ...) are those of
CompVis/latent-diffusion and Stability-AI/generative-models, byte for byte, so original checkpoints
load with no remapping.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import make_attn
from .normalization import Normalize, inference_inplace, nonlinearity

__all__ = [
    "Decoder",
    "Downsample",
    "Encoder",
    "Model",
    "Normalize",
    "ResnetBlock",
    "Upsample",
    "get_timestep_embedding",
    "nonlinearity",
]


def get_timestep_embedding(timesteps: torch.Tensor, embedding_dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps, (B,) -> (B, embedding_dim), as in DDPM."""
    assert timesteps.ndim == 1
    half_dim = embedding_dim // 2
    freq = math.log(10000) / (half_dim - 1)
    freq = torch.exp(torch.arange(half_dim, dtype=torch.float32, device=timesteps.device) * -freq)
    emb = timesteps.float()[:, None] * freq[None, :]  # (B, half_dim)
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)  # (B, 2*half_dim)
    if embedding_dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


# Which of a 3x3 kernel's taps (columns) fall on which of the two original pixels (rows) for an even
# (0) and an odd (1) output after a nearest x2 upsample: output 2i sees upsampled inputs 2i-1, 2i,
# 2i+1 = original i-1, i, i; output 2i+1 sees i, i, i+1.
_FOLD = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # (parity, 2, 3)


def subpixel_kernels(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 conv after nearest x2 as 2x2 convs on the original grid, one per output parity:
    (Co, Ci, 3, 3) -> (4*Co, Ci, 2, 2), phases in (row, col) order (0, 0), (0, 1), (1, 0), (1, 1)."""
    fold = _FOLD.to(weight)
    k = torch.einsum("aik,ockl,bjl->abocij", fold, weight, fold)  # (2, 2, Co, Ci, 2, 2)
    return k.reshape(4 * weight.shape[0], weight.shape[1], 2, 2)


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

    def _phase_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(subpixel kernels, bias for the four phases); kept between calls while the weights are unchanged
        and no graph is recorded (a 512-channel fold costs about a tenth of the conv itself)."""
        weight, bias = self.conv.weight, self.conv.bias
        # an in-place update bumps _version; inference tensors have none (torch lets them change only
        # inside inference_mode, which no vaecli code does to weights), so storage identity stands in
        version = None if weight.is_inference() else weight._version
        key = (weight.data_ptr(), version, weight.dtype, weight.device)
        cached = self.__dict__.get("_phase_cache")
        if cached is not None and cached[0] == key and not torch.is_grad_enabled():
            return cached[1], cached[2]
        phases = (subpixel_kernels(weight), None if bias is None else bias.repeat(4))
        if not torch.is_grad_enabled():
            self.__dict__["_phase_cache"] = (key, *phases)  # plain attribute: not a buffer, not in state_dict
        return phases

    def _subpixel(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        co = self.conv.out_channels
        kernels, bias = self._phase_weights()
        y = F.conv2d(F.pad(x, (1, 1, 1, 1)), kernels, bias)  # (B, 4*Co, h+1, w+1)
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
        inplace = inference_inplace()  # the norm and conv outputs are fresh tensors: safe to reuse
        h = self.conv1(nonlinearity(self.norm1(x), inplace))
        if temb is not None:
            h = h + self.temb_proj(nonlinearity(temb))[:, :, None, None]  # (B, C) -> (B, C, 1, 1)
        h = self.conv2(self.dropout(nonlinearity(self.norm2(h), inplace)))
        if self.in_channels != self.out_channels:
            x = self.conv_shortcut(x) if self.use_conv_shortcut else self.nin_shortcut(x)
        return h.add_(x) if inplace else x + h  # same sum either way: IEEE addition commutes


def _down_path(
    owner: nn.Module,
    *,
    ch: int,
    ch_mult: tuple[int, ...],
    num_res_blocks: int,
    attn_resolutions,
    dropout: float,
    resamp_with_conv: bool,
    resolution: int,
    temb_channels: int,
    attn_type: str,
    num_groups: int = 32,
) -> int:
    """Build `owner.down` (shared by Encoder and Model); returns the channels at the bottom."""
    in_ch_mult = (1,) + tuple(ch_mult)
    owner.in_ch_mult = in_ch_mult
    curr_res = resolution
    owner.down = nn.ModuleList()
    block_in = ch
    for i_level in range(len(ch_mult)):
        block, attn = nn.ModuleList(), nn.ModuleList()
        block_in = ch * in_ch_mult[i_level]
        block_out = ch * ch_mult[i_level]
        for _ in range(num_res_blocks):
            block.append(
                ResnetBlock(
                    in_channels=block_in,
                    out_channels=block_out,
                    temb_channels=temb_channels,
                    dropout=dropout,
                    num_groups=num_groups,
                )
            )
            block_in = block_out
            if curr_res in attn_resolutions:
                attn.append(make_attn(block_in, attn_type=attn_type, num_groups=num_groups))
        down = nn.Module()
        down.block = block
        down.attn = attn
        if i_level != len(ch_mult) - 1:
            down.downsample = Downsample(block_in, resamp_with_conv)
            curr_res = curr_res // 2
        owner.down.append(down)
    return block_in


def _mid(
    block_in: int,
    temb_channels: int,
    dropout: float,
    attn_type: str,
    make_resblock=ResnetBlock,
    make_attn_fn=make_attn,
    num_groups: int = 32,
) -> nn.Module:
    mid = nn.Module()
    block = dict(in_channels=block_in, out_channels=block_in, temb_channels=temb_channels, dropout=dropout, num_groups=num_groups)
    mid.block_1 = make_resblock(**block)
    mid.attn_1 = make_attn_fn(block_in, attn_type=attn_type, num_groups=num_groups)
    mid.block_2 = make_resblock(**block)
    return mid


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> moments (B, 2*z_channels, H/f, W/f), f = 2**(len(ch_mult)-1)."""

    def __init__(
        self,
        *,
        ch: int,
        out_ch: int,
        ch_mult=(1, 2, 4, 8),
        num_res_blocks: int,
        attn_resolutions,
        dropout: float = 0.0,
        resamp_with_conv: bool = True,
        in_channels: int,
        resolution: int,
        z_channels: int,
        double_z: bool = True,
        use_linear_attn: bool = False,
        attn_type: str = "vanilla",
        norm_num_groups: int = 32,
        **ignore_kwargs,
    ):
        super().__init__()
        if use_linear_attn:
            attn_type = "linear"
        self.ch = ch
        self.temb_ch = 0
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.resolution = resolution
        self.in_channels = in_channels

        self.conv_in = nn.Conv2d(in_channels, ch, kernel_size=3, stride=1, padding=1)
        block_in = _down_path(
            self,
            ch=ch,
            ch_mult=ch_mult,
            num_res_blocks=num_res_blocks,
            attn_resolutions=attn_resolutions,
            dropout=dropout,
            resamp_with_conv=resamp_with_conv,
            resolution=resolution,
            temb_channels=self.temb_ch,
            attn_type=attn_type,
            num_groups=norm_num_groups,
        )
        self.mid = _mid(block_in, self.temb_ch, dropout, attn_type, num_groups=norm_num_groups)
        self.norm_out = Normalize(block_in, norm_num_groups)
        self.conv_out = nn.Conv2d(
            block_in, 2 * z_channels if double_z else z_channels, kernel_size=3, stride=1, padding=1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        temb = None
        h = self.conv_in(x)  # no skip connections: keep only the current activation alive
        for i_level in range(self.num_resolutions):
            down = self.down[i_level]
            for i_block in range(self.num_res_blocks):
                h = down.block[i_block](h, temb)
                if len(down.attn) > 0:
                    h = down.attn[i_block](h)
            if i_level != self.num_resolutions - 1:
                h = down.downsample(h)
        h = self.mid.block_1(h, temb)
        h = self.mid.attn_1(h)
        h = self.mid.block_2(h, temb)
        return self.conv_out(nonlinearity(self.norm_out(h), inference_inplace()))


class Decoder(nn.Module):
    """Latent (B, z_channels, h, w) -> image (B, out_ch, h*f, w*f).

    `_make_attn`, `_make_resblock` and `_make_conv` are factories that subclasses override to swap
    block types (e.g. temporal decoders) without copying the constructor.
    """

    def __init__(
        self,
        *,
        ch: int,
        out_ch: int,
        ch_mult=(1, 2, 4, 8),
        num_res_blocks: int,
        attn_resolutions,
        dropout: float = 0.0,
        resamp_with_conv: bool = True,
        in_channels: int,
        resolution: int,
        z_channels: int,
        give_pre_end: bool = False,
        tanh_out: bool = False,
        use_linear_attn: bool = False,
        attn_type: str = "vanilla",
        norm_num_groups: int = 32,
        **ignorekwargs,
    ):
        super().__init__()
        if use_linear_attn:
            attn_type = "linear"
        self.ch = ch
        self.temb_ch = 0
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.resolution = resolution
        self.in_channels = in_channels
        self.give_pre_end = give_pre_end
        self.tanh_out = tanh_out

        block_in = ch * ch_mult[self.num_resolutions - 1]
        curr_res = resolution // 2 ** (self.num_resolutions - 1)
        self.z_shape = (1, z_channels, curr_res, curr_res)

        make_attn_cls = self._make_attn()
        make_resblock_cls = self._make_resblock()
        make_conv_cls = self._make_conv()

        self.conv_in = nn.Conv2d(z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = _mid(block_in, self.temb_ch, dropout, attn_type, make_resblock_cls, make_attn_cls, norm_num_groups)

        self.up = nn.ModuleList()
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[i_level]
            for _ in range(self.num_res_blocks + 1):
                block.append(
                    make_resblock_cls(
                        in_channels=block_in,
                        out_channels=block_out,
                        temb_channels=self.temb_ch,
                        dropout=dropout,
                        num_groups=norm_num_groups,
                    )
                )
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(make_attn_cls(block_in, attn_type=attn_type, num_groups=norm_num_groups))
            up = nn.Module()
            up.block = block
            up.attn = attn
            if i_level != 0:
                up.upsample = Upsample(block_in, resamp_with_conv)
                curr_res = curr_res * 2
            self.up.insert(0, up)  # keep up[i] at the resolution of down[i], as the checkpoints do

        self.norm_out = Normalize(block_in, norm_num_groups)
        self.conv_out = make_conv_cls(block_in, out_ch, kernel_size=3, stride=1, padding=1)

    def _make_attn(self):
        return make_attn

    def _make_resblock(self):
        return ResnetBlock

    def _make_conv(self):
        return nn.Conv2d

    def get_last_layer(self, **kwargs) -> torch.Tensor:
        """The last conv's weight: the adaptive GAN weight is computed from gradients at it."""
        return self.conv_out.weight

    def forward(self, z: torch.Tensor, **kwargs) -> torch.Tensor:
        self.last_z_shape = z.shape
        temb = None
        h = self.conv_in(z)
        h = self.mid.block_1(h, temb, **kwargs)
        h = self.mid.attn_1(h, **kwargs)
        h = self.mid.block_2(h, temb, **kwargs)
        for i_level in reversed(range(self.num_resolutions)):
            up = self.up[i_level]
            for i_block in range(self.num_res_blocks + 1):
                h = up.block[i_block](h, temb, **kwargs)
                if len(up.attn) > 0:
                    h = up.attn[i_block](h, **kwargs)
            if i_level != 0:
                h = up.upsample(h)
        if self.give_pre_end:
            return h
        h = self.conv_out(nonlinearity(self.norm_out(h), inference_inplace()), **kwargs)
        return torch.tanh(h) if self.tanh_out else h


class Model(nn.Module):
    """The DDPM-style U-Net: Encoder-like down path with skips, mid block, up path, timestep MLP."""

    def __init__(
        self,
        *,
        ch: int,
        out_ch: int,
        ch_mult=(1, 2, 4, 8),
        num_res_blocks: int,
        attn_resolutions,
        dropout: float = 0.0,
        resamp_with_conv: bool = True,
        in_channels: int,
        resolution: int,
        use_timestep: bool = True,
        use_linear_attn: bool = False,
        attn_type: str = "vanilla",
    ):
        super().__init__()
        if use_linear_attn:
            attn_type = "linear"
        self.ch = ch
        self.temb_ch = ch * 4
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.resolution = resolution
        self.in_channels = in_channels
        self.use_timestep = use_timestep
        if use_timestep:
            self.temb = nn.Module()
            self.temb.dense = nn.ModuleList([nn.Linear(ch, self.temb_ch), nn.Linear(self.temb_ch, self.temb_ch)])

        self.conv_in = nn.Conv2d(in_channels, ch, kernel_size=3, stride=1, padding=1)
        block_in = _down_path(
            self,
            ch=ch,
            ch_mult=ch_mult,
            num_res_blocks=num_res_blocks,
            attn_resolutions=attn_resolutions,
            dropout=dropout,
            resamp_with_conv=resamp_with_conv,
            resolution=resolution,
            temb_channels=self.temb_ch,
            attn_type=attn_type,
        )
        self.mid = _mid(block_in, self.temb_ch, dropout, attn_type)

        curr_res = resolution // 2 ** (self.num_resolutions - 1)
        self.up = nn.ModuleList()
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[i_level]
            skip_in = ch * ch_mult[i_level]
            for i_block in range(self.num_res_blocks + 1):
                if i_block == self.num_res_blocks:
                    skip_in = ch * self.in_ch_mult[i_level]
                block.append(
                    ResnetBlock(
                        in_channels=block_in + skip_in,
                        out_channels=block_out,
                        temb_channels=self.temb_ch,
                        dropout=dropout,
                    )
                )
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(make_attn(block_in, attn_type=attn_type))
            up = nn.Module()
            up.block = block
            up.attn = attn
            if i_level != 0:
                up.upsample = Upsample(block_in, resamp_with_conv)
                curr_res = curr_res * 2
            self.up.insert(0, up)

        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is not None:
            x = torch.cat((x, context), dim=1)  # extra conditioning channels: (B, C_x + C_ctx, H, W)
        if self.use_timestep:
            if t is None:
                raise ValueError("Model built with use_timestep=True needs timesteps t of shape (B,)")
            temb = get_timestep_embedding(t, self.ch)  # (B, ch)
            temb = self.temb.dense[1](nonlinearity(self.temb.dense[0](temb)))  # (B, 4*ch)
        else:
            temb = None

        hs = [self.conv_in(x)]
        for i_level in range(self.num_resolutions):
            down = self.down[i_level]
            for i_block in range(self.num_res_blocks):
                h = down.block[i_block](hs[-1], temb)
                if len(down.attn) > 0:
                    h = down.attn[i_block](h)
                hs.append(h)
            if i_level != self.num_resolutions - 1:
                hs.append(down.downsample(hs[-1]))

        h = hs[-1]
        h = self.mid.block_1(h, temb)
        h = self.mid.attn_1(h)
        h = self.mid.block_2(h, temb)

        for i_level in reversed(range(self.num_resolutions)):
            up = self.up[i_level]
            for i_block in range(self.num_res_blocks + 1):
                h = up.block[i_block](torch.cat([h, hs.pop()], dim=1), temb)  # skip: (B, C + C_skip, H, W)
                if len(up.attn) > 0:
                    h = up.attn[i_block](h)
            if i_level != 0:
                h = up.upsample(h)
        return self.conv_out(nonlinearity(self.norm_out(h)))

    def get_last_layer(self) -> torch.Tensor:
        return self.conv_out.weight
