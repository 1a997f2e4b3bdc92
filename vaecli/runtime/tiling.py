"""Exact tiled encode and decode: the whole-image result, with a bounded working set per step.

Why not blend overlapping tiles, as diffusers and ComfyUI do: each tile's GroupNorm then sees its own
statistics, which shows as seams and tone shifts (REFERENCE.md section 5). Here the network runs
layer by layer over the whole activation, one tile at a time:

- every activation is kept whole on a *storage* device (host RAM when computing on CUDA, so the GPU
  holds only one tile's working set plus the latent-sized attention);
- each convolution reads its tile plus a halo of its receptive field (one pixel for a 3x3 conv, the
  stride-2 window of a downsample, half a pixel before a nearest x2 upsample), with zeros only where
  the whole-image pass pads, so every output pixel is exact;
- GroupNorm statistics are accumulated over all tiles while the layer before writes them (per-tile
  mean and M2, merged in float64), and applied, fused with Swish, when the next conv reads its tile;
- attention (the mid block, and the per-level attention of kl-f16/f32) runs over the whole tensor:
  it sits at latent size, where the whole tensor is small;
- an activation larger than the storage budget allows (a third of `storage_budget`: by default
  the `--max-memory` budget on CPU, else half of MemAvailable) is not stored at all: it is kept as
  the recipe for any window of it, recomputed from the last stored activation when a later layer
  reads that window. Its GroupNorm statistics take one extra pass over its tiles. An 8192x8192
  decode thus needs only the latent-level activations and the output image in RAM, at the cost of
  recomputing the full-resolution layers once per GroupNorm that follows them.

So tiled == untiled up to float reassociation, for any size, not only multiples of the tile.

When to tile is decided by vaecli.runtime.executor: over the memory policy's budget, or after an
out-of-memory error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..model import AutoencoderKL, DiagonalGaussianDistribution, ResnetBlock
from ..model.normalization import ChannelAffine
from .memory import memory_budget

DEFAULT_TILE_SIZE = 512  # tile side in image pixels on CUDA; each layer's tile covers the same image region
# On CPU smaller tiles are faster: their tensors stay under glibc's mmap threshold, so freed tile
# buffers are reused instead of page-faulted in anew. Default model, 8192x8192 output at 2048x2048
# (docs/benchmarks.md): 512 -> 23-24 s, 256 -> 16-18 s, 128 -> 14-16 s; with recomputation
# 69.6 / 49.6 / 53.1 s. 256 is best of both.
CPU_TILE_SIZE = 256
MIN_TILE = 16  # smallest tile side at any layer, so low-resolution layers are not cut into slivers
STORED_LIVE = 3  # whole activations a tiled pass keeps at once: a block's input, inner and output


# ---------------------------------------------------------------- GroupNorm over all tiles


class _GroupStats:
    """Per-(sample, group) count, mean and M2 merged tile by tile (Chan et al.), in float64."""

    def __init__(self, batch: int, groups: int, device: torch.device):
        self.groups = groups
        self.count = 0
        self.mean = torch.zeros(batch, groups, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(batch, groups, dtype=torch.float64, device=device)

    def add(self, tile: torch.Tensor) -> None:
        b, c = tile.shape[:2]
        values = tile.reshape(b, self.groups, -1)  # (B, G, C/G * h * w)
        n = values.shape[-1]
        var, mean = torch.var_mean(values.float(), dim=-1, unbiased=False)  # each (B, G)
        mean, m2 = mean.double(), var.double() * n
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += m2 + delta.square() * (self.count * n / total)
        self.count = total

    def mean_rstd(self, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, 1/sqrt(var + eps)), each (B, G) in float32, as GroupNorm uses them."""
        var = self.m2 / self.count
        return self.mean.float(), torch.rsqrt(var + eps).float()


@dataclass
class _Activation:
    """One whole activation: stored on the storage device, or recomputed tile by tile on demand.

    A stored activation holds `tensor` and gets its GroupNorm statistics as its tiles are written.
    One that would not fit the host-memory budget is kept as a `producer` instead, a function from a
    (rows, cols) window to that window's values, computed from the activations before it; its
    statistics take one pass over all its tiles, when a GroupNorm first needs them.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype
    stats: _GroupStats | None  # None if C is not a multiple of the groups (never normalised)
    tensor: torch.Tensor | None = None
    producer: Callable[[slice, slice], torch.Tensor] | None = None
    stats_ready: bool = False


# ---------------------------------------------------------------- the layer-by-layer runner


class _TiledRunner:
    """Runs convolutions, ResnetBlocks and resampling of an Encoder/Decoder tile by tile."""

    def __init__(
        self,
        compute: torch.device,
        storage: torch.device,
        image_height: int,
        tile_size: int,
        num_groups: int | None,
        store_limit: int | None = None,
    ):
        self.compute = compute
        self.storage = storage
        self.image_height = image_height
        self.tile_size = tile_size
        self.num_groups = num_groups
        self.store_limit = store_limit  # bytes: larger activations are recomputed, not stored (None: store all)
        self.pin = storage.type == "cpu" and compute.type == "cuda"

    # -- storage

    def _stats(self, shape) -> _GroupStats | None:
        """Statistics to gather for a GroupNorm after this activation; none where no GroupNorm can follow
        (channels not a multiple of the groups, or a network whose norms have fixed statistics)."""
        if self.num_groups is None or shape[1] % self.num_groups != 0:
            return None
        return _GroupStats(shape[0], self.num_groups, self.compute)

    def _fits(self, shape, dtype) -> bool:
        return self.store_limit is None or math.prod(shape) * dtype.itemsize <= self.store_limit

    def _empty(self, shape, dtype) -> _Activation:
        tensor = torch.empty(shape, dtype=dtype, device=self.storage, pin_memory=self.pin)
        return _Activation(tuple(shape), dtype, self._stats(shape), tensor=tensor, stats_ready=True)

    def _write(self, dst: _Activation, rows: slice, cols: slice, tile: torch.Tensor) -> None:
        if dst.stats is not None:
            dst.stats.add(tile)
        # synchronous: a later tile's read may slice this host memory on the CPU side (a
        # non-contiguous slice is gathered on the host before its upload), so it must have landed
        dst.tensor[:, :, rows, cols].copy_(tile)

    def _produce(self, shape, dtype, producer, *, store: bool | None = None) -> _Activation:
        """Store the activation tile by tile when it fits the budget (or `store` says so), else keep
        `producer` to recompute its tiles on demand."""
        if store is None:
            store = self._fits(shape, dtype)
        if not store:
            return _Activation(tuple(shape), dtype, self._stats(shape), producer=producer)
        dst = self._empty(shape, dtype)
        for rows, cols in self._tiles(*shape[-2:]):
            self._write(dst, rows, cols, producer(rows, cols))
        return dst

    def _read(self, src: _Activation, rows: slice, cols: slice) -> torch.Tensor:
        if src.tensor is not None:
            return src.tensor[:, :, rows, cols].to(self.compute, non_blocking=self.pin)
        return src.producer(rows, cols)

    def _ready_stats(self, src: _Activation) -> _GroupStats:
        """The activation's GroupNorm statistics; for a recomputed one, one pass over its tiles."""
        if not src.stats_ready:
            for rows, cols in self._tiles(*src.shape[-2:]):
                src.stats.add(src.producer(rows, cols))
            src.stats_ready = True
        return src.stats

    def whole(self, tensor: torch.Tensor) -> _Activation:
        """Store a whole tensor (the input, or the output of a whole-tensor block)."""
        act = self._empty(tensor.shape, tensor.dtype)
        self._write(act, slice(None), slice(None), tensor.to(self.compute))  # statistics live on the compute device
        return act

    def stored(self, src: _Activation) -> torch.Tensor:
        """The whole tensor on the compute device, computing a recomputed activation's tiles once."""
        if src.tensor is None:
            src = self._produce(src.shape, src.dtype, src.producer, store=True)
        return src.tensor.to(self.compute)

    def _tiles(self, height: int, width: int):
        """(rows, cols) slices covering (height, width); the side shrinks with the layer's resolution."""
        side = max(MIN_TILE, self.tile_size * height // self.image_height)
        for r0 in range(0, height, side):
            for c0 in range(0, width, side):
                yield slice(r0, min(r0 + side, height)), slice(c0, min(c0 + side, width))

    # -- reading a tile with its halo

    def _normalize_swish(self, t: torch.Tensor, src: _Activation, norm: nn.Module) -> torch.Tensor:
        """The norm (GroupNorm with whole-image statistics, or a ChannelAffine: none), then Swish, on one
        tile of `src` (computed in float32)."""
        if isinstance(norm, ChannelAffine):
            scale, shift = norm.weight.float()[None], norm.bias.float()[None]  # (1, C)
        else:
            mean, rstd = self._ready_stats(src).mean_rstd(norm.eps)  # (B, G)
            per_group = t.shape[1] // norm.num_groups
            scale = rstd.repeat_interleave(per_group, dim=1) * norm.weight.float()  # (B, C)
            shift = norm.bias.float() - mean.repeat_interleave(per_group, dim=1) * scale  # (B, C)
        y = torch.addcmul(shift[:, :, None, None], t.float(), scale[:, :, None, None])  # one pass: x * scale + shift
        return F.silu(y, inplace=True).to(t.dtype)

    def _window(self, src: _Activation, r0: int, r1: int, c0: int, c1: int, *, norm=None, up=False) -> torch.Tensor:
        """Rows [r0, r1) and cols [c0, c1) of the conv's input (normalised, x2-upsampled when asked),
        with zeros outside the image exactly where the whole-image pass pads."""
        h, w = src.shape[-2:]
        scale = 2 if up else 1
        vr0, vr1 = max(r0, 0), min(r1, h * scale)
        vc0, vc1 = max(c0, 0), min(c1, w * scale)
        sr0, sr1 = vr0 // scale, (vr1 - 1) // scale + 1  # source rows under the valid window
        sc0, sc1 = vc0 // scale, (vc1 - 1) // scale + 1
        t = self._read(src, slice(sr0, sr1), slice(sc0, sc1))
        if norm is not None:
            t = self._normalize_swish(t, src, norm)
        if up:  # nearest x2, then crop to the valid window
            t = F.interpolate(t, scale_factor=2.0, mode="nearest")
            t = t[:, :, vr0 - 2 * sr0 : vr1 - 2 * sr0, vc0 - 2 * sc0 : vc1 - 2 * sc0]
        return F.pad(t, (vc0 - c0, c1 - vc1, vr0 - r0, r1 - vr1))  # zeros where the image ends

    def _conv_tile(self, src, conv: nn.Conv2d, pad: tuple[int, int], rows: slice, cols: slice, **read) -> torch.Tensor:
        """conv's output over (rows, cols); `pad` = (top, left) zeros the whole-image pass adds."""
        (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
        r0, c0 = rows.start * sh - pad[0], cols.start * sw - pad[1]
        r1, c1 = (rows.stop - 1) * sh - pad[0] + kh, (cols.stop - 1) * sw - pad[1] + kw
        window = self._window(src, r0, r1, c0, c1, **read)
        if self.compute.type == "cpu":  # oneDNN is faster on NHWC windows (docs/benchmarks.md); exact,
            window = window.contiguous(memory_format=torch.channels_last)  # as no torch GroupNorm runs here
        return F.conv2d(window, conv.weight, conv.bias, stride=conv.stride)

    # -- layers

    def conv(self, src: _Activation, conv: nn.Conv2d, *, norm=None, up=False, down=False, store: bool | None = None) -> _Activation:
        """One conv (optionally after GroupNorm+Swish, a nearest x2 upsample, or as a Downsample)."""
        b, _, h, w = src.shape
        if up:
            h, w = 2 * h, 2 * w
        if down:  # Downsample: zero pad right and bottom by one, 3x3 stride 2, no other padding
            pad, (h, w) = (0, 0), ((h - 2) // 2 + 1, (w - 2) // 2 + 1)
        else:
            pad = conv.padding

        def produce(rows: slice, cols: slice) -> torch.Tensor:
            return self._conv_tile(src, conv, pad, rows, cols, norm=norm, up=up)

        return self._produce((b, conv.out_channels, h, w), src.dtype, produce, store=store)

    def resnet(self, x: _Activation, block: ResnetBlock) -> _Activation:
        """x + conv2(swish(norm2(conv1(swish(norm1(x)))))), the shortcut applied to x where channels change."""
        h = self.conv(x, block.conv1, norm=block.norm1)
        shortcut = None
        if block.in_channels != block.out_channels:
            shortcut = block.conv_shortcut if block.use_conv_shortcut else block.nin_shortcut

        def produce(rows: slice, cols: slice) -> torch.Tensor:
            out = self._conv_tile(h, block.conv2, block.conv2.padding, rows, cols, norm=block.norm2)
            res = self._read(x, rows, cols) if shortcut is None else self._conv_tile(x, shortcut, shortcut.padding, rows, cols)
            return res + out

        if shortcut is None and x.tensor is not None and h.tensor is not None:
            # identity shortcut, both inputs stored: each output pixel reads only its own x pixel
            # (h is already computed), so write over x in place instead of storing a third tensor
            x.stats = self._stats(x.shape)
            for rows, cols in self._tiles(*x.shape[-2:]):
                self._write(x, rows, cols, produce(rows, cols))
            return x
        return self._produce((x.shape[0], block.out_channels, *x.shape[2:]), x.dtype, produce)

    def attention(self, src: _Activation, block: nn.Module) -> _Activation:
        """A whole-tensor block (attention over every position): run it once, untiled."""
        return self.whole(block(self.stored(src)))


# ---------------------------------------------------------------- public API


def _devices(vae: AutoencoderKL, offload: bool | None) -> tuple[torch.device, torch.device]:
    compute = next(vae.parameters()).device
    if offload is None:
        offload = compute.type == "cuda"
    return compute, torch.device("cpu") if offload else compute


def default_tile_size(device: torch.device) -> int:
    """CPU_TILE_SIZE on CPU, DEFAULT_TILE_SIZE elsewhere."""
    return CPU_TILE_SIZE if torch.device(device).type == "cpu" else DEFAULT_TILE_SIZE


def _store_limit(storage: torch.device, budget: int | None) -> int:
    """Largest activation to store: a third of the budget, for the input, the output and a
    ResnetBlock's inner activation live at once (default budget: `memory_budget` of the storage)."""
    if budget is None:
        budget = memory_budget(storage)
    return budget // STORED_LIVE


def _groups(vae: AutoencoderKL) -> int | None:
    """The GroupNorm groups whose statistics the tiler gathers; None for fixed statistics (norm_type affine)."""
    return vae.config.norm_num_groups if vae.config.norm_type == "group" else None


def _check_supported(module: nn.Module) -> None:
    if getattr(module, "give_pre_end", False):
        raise ValueError("tiled decode of a Decoder with give_pre_end is not supported")
    for sub in module.modules():
        if getattr(sub, "with_conv", True) is False:
            raise ValueError("tiling needs conv resampling (resamp_with_conv=True), as every shipped model has")


def _run_stages(run: _TiledRunner, h: _Activation, stages) -> _Activation:
    """Each stage of an Encoder/Decoder (`stages()`, the order their own forward runs), tile by tile."""
    for stage in stages:
        m = stage.module
        if stage.kind == "conv":
            h = run.conv(h, m)
        elif stage.kind == "resnet":
            h = run.resnet(h, m)
        elif stage.kind == "attn":
            h = run.attention(h, m)
        elif stage.kind in ("down", "up"):
            h = run.conv(h, m.conv, down=stage.kind == "down", up=stage.kind == "up")
        elif stage.kind == "head":  # output-sized (the moments, or the image): stored whole
            h = run.conv(h, m.conv, norm=m.norm, store=True)
        else:
            raise ValueError(f"tiling: unknown stage kind {stage.kind!r}")
    return h


@torch.inference_mode()
def tiled_encode(
    vae: AutoencoderKL,
    x: torch.Tensor,
    tile_size: int | None = None,
    *,
    offload: bool | None = None,
    storage_budget: int | None = None,
) -> DiagonalGaussianDistribution:
    """vae.encode(x), computed tile by tile: same posterior, bounded working set (see module doc).

    x: (B, 3, H, W) in [-1, 1], any H and W. tile_size: tile side in image pixels (default:
    `default_tile_size` of the model's device). offload: keep whole activations in host RAM (default on
    CUDA), so device memory is bounded by the tile; on CPU they stay where they are.
    storage_budget: bytes of whole activations to keep (default: `memory_budget` of the storage
    device); one larger than a third of it is recomputed tile by tile instead, which bounds memory
    for any size at the cost of compute.
    """
    _check_supported(vae.encoder)
    compute, storage = _devices(vae, offload)
    tile_size = tile_size or default_tile_size(compute)
    run = _TiledRunner(compute, storage, x.shape[-2], tile_size, _groups(vae), _store_limit(storage, storage_budget))
    moments = _run_stages(run, run.whole(x), vae.encoder.stages()).tensor.to(compute)  # (B, 2*z, h, w): latent-sized
    if vae.quant_conv is not None:
        moments = vae.quant_conv(moments)
    return DiagonalGaussianDistribution(moments.to(x.device))


@torch.inference_mode()
def tiled_decode(
    vae: AutoencoderKL,
    z: torch.Tensor,
    tile_size: int | None = None,
    *,
    offload: bool | None = None,
    storage_budget: int | None = None,
) -> torch.Tensor:
    """vae.decode(z), computed tile by tile: same pixels, bounded working set (see module doc).

    z: raw latents (B, C, h, w), any h and w; returns (B, 3, h*f, w*f) on z's device.
    offload and storage_budget: as for `tiled_encode`.
    """
    dec = vae.decoder
    _check_supported(dec)
    compute, storage = _devices(vae, offload)
    out_device, z = z.device, z.to(compute)
    if vae.post_quant_conv is not None:
        z = vae.post_quant_conv(z)  # 1x1 at latent size: whole
    tile_size = tile_size or default_tile_size(compute)
    height = z.shape[-2] * vae.downsample_factor
    run = _TiledRunner(compute, storage, height, tile_size, _groups(vae), _store_limit(storage, storage_budget))
    out = _run_stages(run, run.whole(z), dec.stages()).tensor
    if dec.tanh_out:
        out = torch.tanh(out)
    return out.to(out_device)
