"""Encoder and Decoder of latent-diffusion's autoencoder, and the down path and mid block they share with the U-Net.

Parameter names (`down[i].block[j]`, `mid.attn_1`, `norm_out`, ...) are those of CompVis/latent-diffusion
and Stability-AI/generative-models, byte for byte, so original checkpoints load with no remapping.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import make_attn
from .blocks import Downsample, ResnetBlock, Upsample
from .normalization import Normalize, nonlinearity, owns_output


def build_down_path(
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
    """Build `owner.down` (shared by Encoder and the U-Net Model); returns the channels at the bottom."""
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


def build_mid(
    block_in: int,
    temb_channels: int,
    dropout: float,
    attn_type: str,
    make_resblock=ResnetBlock,
    make_attn_fn=make_attn,
    num_groups: int = 32,
) -> nn.Module:
    """`mid`: ResnetBlock, attention, ResnetBlock at the lowest resolution (shared by Encoder, Decoder, U-Net)."""
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
        block_in = build_down_path(
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
        self.mid = build_mid(block_in, self.temb_ch, dropout, attn_type, num_groups=norm_num_groups)
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
        return self.conv_out(nonlinearity(self.norm_out(h), owns_output(self.norm_out)))


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
        self.mid = build_mid(block_in, self.temb_ch, dropout, attn_type, make_resblock_cls, make_attn_cls, norm_num_groups)

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
        h = self.conv_out(nonlinearity(self.norm_out(h), owns_output(self.norm_out)), **kwargs)
        return torch.tanh(h) if self.tanh_out else h
