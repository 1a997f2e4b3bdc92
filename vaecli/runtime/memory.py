"""Memory policy: how many bytes a model call may use, and the estimate that decides when to tile.

State travels in a `MemoryPolicy` value given to each `Runner` (vaecli.runtime.executor), never in a
module global, so two models in one process can run under different budgets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..model import AutoencoderKL

ACTIVATION_COPIES = 4  # live full-size tensors at the widest layer of an untiled pass (x, norm, act, conv out)
CPU_BUDGET_FRACTION = 0.5  # of MemAvailable: the rest is for the OS, the other processes and the outputs
CUDA_BUDGET_FRACTION = 0.9  # of free device memory: cuDNN workspaces and the allocator's slack need the rest


def memory_budget(device: torch.device) -> int:
    """Default budget: a fraction of free CUDA memory, or of MemAvailable (/proc/meminfo) on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_BUDGET_FRACTION)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(int(line.split()[1]) * 1024 * CPU_BUDGET_FRACTION)
    except OSError:
        pass
    return 1 << 62  # unknown: never tile pre-emptively; an out-of-memory error still falls back


def _image_size(vae: AutoencoderKL, shape, mode: str) -> tuple[int, int]:
    """Pixel (height, width) the full-resolution layers run at, for an encode or decode of `shape`."""
    f = vae.downsample_factor
    h, w = shape[-2:]
    if mode == "encode":
        return math.ceil(h / f) * f, math.ceil(w / f) * f
    return h * f, w * f


def _widest_activation(vae: AutoencoderKL, height: int, width: int) -> int:
    """Elements per sample of the largest activation; level l runs at 1/2**l of the image."""
    cfg = vae.config
    widest = 0
    for level, mult in enumerate(cfg.ch_mult):
        below = cfg.ch_mult[level + 1] if level + 1 < len(cfg.ch_mult) else 0
        channels = cfg.ch * max(mult, below)  # a decoder upsample emits the level below's width here
        widest = max(widest, channels * (height >> level) * (width >> level))
    return widest


def estimate_memory(vae: AutoencoderKL, shape, dtype: torch.dtype, mode: str, *, tile_size: int | None = None) -> int:
    """Bytes an encode or decode of `shape` needs on the compute device: weights + live activations.

    shape: (B, 3, H, W) for mode "encode", (B, C, h, w) for "decode". With `tile_size`, the tiled
    pass with offload (whole activations in host RAM): weights, a few tile-sized tensors, and the
    whole-tensor attention at latent size. A rough upper bound, not an exact figure.
    """
    if mode not in ("encode", "decode"):
        raise ValueError(f"mode must be encode or decode, not {mode!r}")
    b = shape[0]
    item = dtype.itemsize
    weights = sum(p.numel() for p in vae.parameters()) * item
    height, width = _image_size(vae, shape, mode)
    widest = _widest_activation(vae, height, width)
    if tile_size is None:
        return weights + ACTIVATION_COPIES * b * widest * item
    f = vae.downsample_factor
    latent = vae.config.ch * vae.config.ch_mult[-1] * (height // f) * (width // f)  # the mid block, whole
    tile_fraction = min(1.0, tile_size * tile_size / (height * width))
    return weights + ACTIVATION_COPIES * b * item * int(widest * tile_fraction + latent)


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    msg = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


@dataclass(frozen=True)
class MemoryPolicy:
    """The memory a model call may use (`--max-memory`) and the tile side used past it.

    max_memory: bytes on the compute device; None: `memory_budget` of the device at call time.
    tile_size: tile side in image pixels for tiled passes; None: the tiler's default for the device.
    """

    max_memory: int | None = None
    tile_size: int | None = None

    def __post_init__(self) -> None:
        if self.max_memory is not None and self.max_memory <= 0:
            raise ValueError(f"max_memory must be positive, not {self.max_memory}")

    def budget(self, device: torch.device) -> int:
        return self.max_memory if self.max_memory is not None else memory_budget(device)

    def should_tile(self, vae: AutoencoderKL, shape, dtype: torch.dtype, mode: str) -> bool:
        """True when the untiled pass is estimated to exceed the budget."""
        device = next(vae.parameters()).device
        return estimate_memory(vae, shape, dtype, mode) > self.budget(device)
