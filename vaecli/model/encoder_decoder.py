"""Encoder and Decoder of latent-diffusion's autoencoder, and the down path and mid block they share with the U-Net.

Parameter names (`down[i].block[j]`, `mid.attn_1`, `norm_out`, ...) are those of CompVis/latent-diffusion
and Stability-AI/generative-models, byte for byte, so original checkpoints load with no remapping.

Each network's layer order is written once, in its `stages()`: its own `forward` walks them, and so
does the exact tiler (vaecli.runtime.tiling), which runs each stage tile by tile by its `kind`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import nn

from .attention import make_attn
from .blocks import Downsample, ResnetBlock, Upsample
from .normalization import Normalize, fix_group_norms, nonlinearity, owns_output


class OutputHead(NamedTuple):
    """norm_out, Swish, conv_out: the last step of both networks (the modules stay attributes of the network)."""

    norm: nn.Module
    conv: nn.Module

    def __call__(self, h: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.conv(nonlinearity(self.norm(h), owns_output(self.norm)), **kwargs)


class Stage(NamedTuple):
    """One step of a network's pass, in order. `kind` says what the step does to the pixel grid:

    "conv" (conv_in: a conv with its padding), "resnet" (a ResnetBlock), "attn" (needs the whole
    tensor at once), "down" (a Downsample), "up" (an Upsample), "head" (an OutputHead).
    """

    kind: str
    module: Callable[..., torch.Tensor]

    def __call__(self, h: torch.Tensor, **kwargs) -> torch.Tensor:
        """Run the step; extra keyword arguments (a temporal decoder's) go to blocks and the head only."""
        if self.kind in ("resnet", "attn", "head"):
            return self.module(h, **kwargs)
        return self.module(h)


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


def _mid_stages(mid: nn.Module) -> Iterator[Stage]:
    """The mid block's steps, as Encoder and Decoder run them."""
    yield Stage("resnet", mid.block_1)
    yield Stage("attn", mid.attn_1)
    yield Stage("resnet", mid.block_2)


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
        norm_type: str = "group",
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
        if norm_type == "affine":  # vaecli's option: fixed statistics, so the latent does not move with size
            fix_group_norms(self)

    def stages(self) -> Iterator[Stage]:
        """The layers in the order they run, full resolution first (see the module doc)."""
        yield Stage("conv", self.conv_in)
        for i_level, down in enumerate(self.down):
            for i_block in range(self.num_res_blocks):
                yield Stage("resnet", down.block[i_block])
                if len(down.attn) > 0:
                    yield Stage("attn", down.attn[i_block])
            if i_level != self.num_resolutions - 1:
                yield Stage("down", down.downsample)
        yield from _mid_stages(self.mid)
        yield Stage("head", OutputHead(self.norm_out, self.conv_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x  # no skip connections: keep only the current activation alive
        for stage in self.stages():
            h = stage(h)
        return h


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
        norm_type: str = "group",
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
        if norm_type == "affine":  # vaecli's option: fixed statistics, so colour does not move with size
            fix_group_norms(self)

    def _make_attn(self):
        return make_attn

    def _make_resblock(self):
        return ResnetBlock

    def _make_conv(self):
        return nn.Conv2d

    def get_last_layer(self, **kwargs) -> torch.Tensor:
        """The last conv's weight: the adaptive GAN weight is computed from gradients at it."""
        return self.conv_out.weight

    def stages(self) -> Iterator[Stage]:
        """The layers in the order they run, latent resolution first (see the module doc); without
        the head when `give_pre_end` asks for the features before it."""
        yield Stage("conv", self.conv_in)
        yield from _mid_stages(self.mid)
        for i_level in reversed(range(self.num_resolutions)):
            up = self.up[i_level]
            for i_block in range(self.num_res_blocks + 1):
                yield Stage("resnet", up.block[i_block])
                if len(up.attn) > 0:
                    yield Stage("attn", up.attn[i_block])
            if i_level != 0:
                yield Stage("up", up.upsample)
        if not self.give_pre_end:
            yield Stage("head", OutputHead(self.norm_out, self.conv_out))

    def forward(self, z: torch.Tensor, **kwargs) -> torch.Tensor:
        self.last_z_shape = z.shape
        h = z
        for stage in self.stages():
            h = stage(h, **kwargs)
        return torch.tanh(h) if self.tanh_out and not self.give_pre_end else h
