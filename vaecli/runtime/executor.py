"""Runs a loaded VAE for batch work: the one choke point every encode and decode of the commands passes.

What a command needs from a model call, in one place: no autograd, inputs moved to the model's
device and dtype, a batch over the memory budget run in slices, exact tiling for an item that alone
will not fit or runs out of memory (so the batch size never decides it), and a batch whose float16
result has NaN/inf (the SDXL VAE overflows in fp16) redone in float32 with a warning. Results come
back in float32.
"""

from __future__ import annotations

import copy
import warnings

import torch

from ..model import AutoencoderKL, DiagonalGaussianDistribution
from .device import exact_float32
from .memory import MemoryPolicy, is_out_of_memory
from .tiling import tiled_decode, tiled_encode

DEFAULT_BATCH_SIZE = {"cpu": 4, "mps": 4, "cuda": 8}


class Runner:
    """A model with its memory policy; keeps the float32 copy made for fp16 overflows, once."""

    def __init__(self, vae: AutoencoderKL, memory: MemoryPolicy | None = None):
        self.vae = vae
        self.memory = memory or MemoryPolicy()
        self._fp32: AutoencoderKL | None = None
        exact_float32(self.device, self.dtype)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def default_batch_size(self) -> int:
        return DEFAULT_BATCH_SIZE.get(self.device.type, 4)

    def encode(self, x: torch.Tensor) -> DiagonalGaussianDistribution:
        """(B, 3, H, W) pixels in [-1, 1] -> posterior over raw latents, float32 on the model's device."""
        with torch.inference_mode():
            moments = self._encode(self.vae, x.to(self.device, self.dtype)).parameters  # (B, 2C, h, w)
            if self._overflowed(moments, "encode"):
                moments = self._encode(self._float32(), x.to(self.device, torch.float32)).parameters
            return DiagonalGaussianDistribution(moments.float())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents (B, C, h, w) -> pixels (B, 3, h*f, w*f), nominally in [-1, 1], float32."""
        with torch.inference_mode():
            out = self._decode(self.vae, z.to(self.device, self.dtype))
            if self._overflowed(out, "decode"):
                out = self._decode(self._float32(), z.to(self.device, torch.float32))
            return out.float()

    def _encode(self, vae: AutoencoderKL, x: torch.Tensor) -> DiagonalGaussianDistribution:
        def join(parts: list[DiagonalGaussianDistribution]) -> DiagonalGaussianDistribution:
            return DiagonalGaussianDistribution(torch.cat([p.parameters for p in parts]))  # (B, 2C, h, w)

        return self._auto(vae, x, "encode", vae.encode, lambda t: tiled_encode(vae, t, self.memory.tile_size, storage_budget=self.memory.max_memory), join)

    def _decode(self, vae: AutoencoderKL, z: torch.Tensor) -> torch.Tensor:
        return self._auto(vae, z, "decode", vae.decode, lambda t: tiled_decode(vae, t, self.memory.tile_size, storage_budget=self.memory.max_memory), torch.cat)

    def _auto(self, vae: AutoencoderKL, t: torch.Tensor, mode: str, untiled, tiled, join):
        """Untiled, in the largest slices of the batch that fit the budget; tiled only when one item alone is over
        it or runs out of memory alone.

        Whether an item is tiled depends on its size, never on the batch it came in: tiled output equals
        untiled only to float rounding (1/255 in a few pixels once 8-bit), so --batch-size must not decide it.
        """
        if self.memory.should_tile(vae, t[:1].shape, t.dtype, mode):
            return tiled(t)
        fit = next(k for k in range(t.shape[0], 0, -1) if k == 1 or not self.memory.should_tile(vae, (k, *t.shape[1:]), t.dtype, mode))
        parts = [self._untiled_or_tiled(chunk, untiled, tiled, join) for chunk in t.split(fit)]
        return parts[0] if len(parts) == 1 else join(parts)

    def _untiled_or_tiled(self, t: torch.Tensor, untiled, tiled, join):
        """Untiled; after an out-of-memory error, item by item, and tiled for an item that alone runs out."""
        try:
            return untiled(t)
        except (RuntimeError, torch.OutOfMemoryError) as e:
            if not is_out_of_memory(e):
                raise
        if t.is_cuda:  # the failed attempt's blocks, outside the except so its frames are released
            torch.cuda.empty_cache()
        if t.shape[0] > 1:
            return join([self._untiled_or_tiled(item, untiled, tiled, join) for item in t.split(1)])
        return tiled(t)

    def _overflowed(self, out: torch.Tensor, what: str) -> bool:
        if self.dtype != torch.float16 or torch.isfinite(out).all():
            return False
        warnings.warn(f"{what}: NaN/inf in float16 (the model overflows); redoing this batch in float32", RuntimeWarning, stacklevel=3)
        return True

    def _float32(self) -> AutoencoderKL:
        if self._fp32 is None:
            self._fp32 = copy.deepcopy(self.vae).float()
        return self._fp32
