"""Attention blocks of the autoencoder and `make_attn`, which picks one by name.

"vanilla" runs torch's scaled_dot_product_attention, which already dispatches to flash or
memory-efficient kernels; "vanilla-xformers" uses xformers when it is importable and otherwise
falls back to SDPA (same parameters, same result; an info-level log line per block built), so a
config written for an xformers machine still runs everywhere.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from .normalization import Normalize

log = logging.getLogger(__name__)

try:  # optional accelerator; never required
    import xformers.ops as xops  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    xops = None


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions, with 1x1-conv projections."""

    def __init__(self, in_channels: int, num_groups: int = 32):
        super().__init__()
        self.in_channels = in_channels
        self.norm = Normalize(in_channels, num_groups)
        self.q = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.k = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.v = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.proj_out = nn.Conv2d(in_channels, in_channels, kernel_size=1)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v)  # (B, 1, HW, C)

    def attention(self, h_: torch.Tensor) -> torch.Tensor:
        h_ = self.norm(h_)
        q, k, v = self.q(h_), self.k(h_), self.v(h_)
        b, c, h, w = q.shape
        # (B, C, H, W) -> (B, 1, HW, C): one head whose features are the channels. Contiguous: on
        # NCHW input the reshape is a view whose channels have stride HW, and SDPA on CPU then
        # falls back from its flash kernel to the unfused math path (about 1.7x slower at 64x64)
        q, k, v = (t.permute(0, 2, 3, 1).reshape(b, 1, h * w, c).contiguous() for t in (q, k, v))
        out = self._attend(q, k, v)  # (B, 1, HW, C)
        return out.reshape(b, h, w, c).permute(0, 3, 1, 2)  # (B, C, H, W), channels_last strides

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return x + self.proj_out(self.attention(x))


class MemoryEfficientAttnBlock(AttnBlock):
    """AttnBlock through xformers' memory-efficient kernel; SDPA where xformers is absent."""

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if xops is None or not q.is_cuda:
            return super()._attend(q, k, v)
        # xformers wants (B, T, heads, C)
        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)  # (B, 1, HW, C)


class LinearAttention(nn.Module):
    """Linear attention: softmax over keys' positions, then context = K V^T, out = context^T Q."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.heads = heads
        hidden_dim = dim_head * heads
        self.to_qkv = nn.Conv2d(dim, hidden_dim * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        qkv = self.to_qkv(x)  # (B, 3*heads*d, H, W)
        q, k, v = qkv.reshape(b, 3, self.heads, -1, h * w).unbind(1)  # each (B, heads, d, HW)
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)  # (B, heads, d, d)
        out = torch.einsum("bhde,bhdn->bhen", context, q)  # (B, heads, d, HW)
        return self.to_out(out.reshape(b, -1, h, w))  # (B, dim, H, W)


class LinAttnBlock(LinearAttention):
    """Linear attention with one head as wide as the input, as latent-diffusion's `linear` type."""

    def __init__(self, in_channels: int):
        super().__init__(dim=in_channels, heads=1, dim_head=in_channels)

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return super().forward(x)


class _Identity(nn.Identity):
    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return x


def make_attn(in_channels: int, attn_type: str = "vanilla", attn_kwargs: dict | None = None, num_groups: int = 32) -> nn.Module:
    """The attention block named by `attn_type`: vanilla, vanilla-xformers, linear or none.
    `num_groups` is the GroupNorm of the vanilla blocks (linear attention has no norm)."""
    if attn_type == "vanilla":
        return AttnBlock(in_channels, num_groups)
    if attn_type == "vanilla-xformers":
        if xops is None:
            log.info("attn_type vanilla-xformers: xformers is not installed, using torch SDPA (same result)")
        return MemoryEfficientAttnBlock(in_channels, num_groups)
    if attn_type == "linear":
        return LinAttnBlock(in_channels)
    if attn_type == "none":
        return _Identity()
    raise ValueError(f"attn_type {attn_type!r} unknown; use vanilla, vanilla-xformers, linear or none")

