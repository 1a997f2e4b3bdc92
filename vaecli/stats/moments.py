"""Streaming per-channel moments of latents in float64: mean, std and covariance over any number of batches.

Batches are merged with the pairwise update of Chan, Golub and LeVeque: each batch's own mean and
centred scatter matrix, combined exactly, so no sum of squares grows large enough to cancel (a
latent channel whose mean is far from zero keeps full precision after billions of cells). Merging
two accumulators is the same update, so shards of a data set can be summed in any order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class LatentMoments:
    """Moments of C-channel latents: every cell (batch item x height x width) is one C-vector sample."""

    count: int  # cells seen
    mean: torch.Tensor  # (C,) float64
    scatter: torch.Tensor  # (C, C) float64: sum over cells of (x - mean)(x - mean)^T
    minimum: torch.Tensor  # (C,) float64
    maximum: torch.Tensor  # (C,) float64

    @classmethod
    def empty(cls, channels: int) -> LatentMoments:
        f64 = torch.float64
        inf = torch.full((channels,), math.inf, dtype=f64)
        return cls(0, torch.zeros(channels, dtype=f64), torch.zeros(channels, channels, dtype=f64), inf, -inf)

    @property
    def channels(self) -> int:
        return self.mean.numel()

    def update(self, z: torch.Tensor) -> None:
        """Add a batch of latents (B, C, H, W), or one latent (C, H, W); any dtype and device."""
        if z.ndim == 3:
            z = z[None]  # (1, C, H, W)
        if z.ndim != 4 or z.shape[1] != self.channels:
            raise ValueError(f"expected latents of shape (B, {self.channels}, H, W), got {tuple(z.shape)}")
        self.add_samples(z.detach().transpose(0, 1).reshape(self.channels, -1).T)  # (B*H*W, C)

    def add_samples(self, x: torch.Tensor) -> None:
        """Add (N, C) samples, one C-vector per row."""
        x = x.detach().to("cpu", torch.float64)
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise ValueError(f"expected samples of shape (N, {self.channels}), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("samples hold NaN or infinite values")
        if x.shape[0] == 0:
            return
        mean = x.mean(dim=0)  # (C,)
        centred = x - mean  # (N, C)
        self.merge(LatentMoments(x.shape[0], mean, centred.T @ centred, x.amin(dim=0), x.amax(dim=0)))

    def merge(self, other: LatentMoments) -> None:
        """Fold `other` (moments of disjoint data) into these."""
        if other.channels != self.channels:
            raise ValueError(f"cannot merge moments of {other.channels} channels into {self.channels}")
        if other.count == 0:
            return
        n = self.count + other.count
        delta = other.mean - self.mean  # (C,)
        self.scatter = self.scatter + other.scatter + torch.outer(delta, delta) * (self.count * other.count / n)
        self.mean = self.mean + delta * (other.count / n)
        self.minimum = torch.minimum(self.minimum, other.minimum)
        self.maximum = torch.maximum(self.maximum, other.maximum)
        self.count = n

    def _need(self, at_least: int) -> None:
        if self.count < at_least:
            raise ValueError(f"moments of {self.count} latent cells: need at least {at_least}")

    @property
    def covariance(self) -> torch.Tensor:
        """(C, C), unbiased (n - 1), as torch.std and ActNorm's initialisation use."""
        self._need(2)
        return self.scatter / (self.count - 1)

    @property
    def std(self) -> torch.Tensor:
        """(C,) per-channel standard deviation, unbiased."""
        return torch.sqrt(torch.diagonal(self.covariance))

    @property
    def global_mean(self) -> float:
        """The mean over every latent value (all channels pooled; every channel has the same count)."""
        self._need(1)
        return float(self.mean.mean())

    @property
    def global_std(self) -> float:
        """The standard deviation over every latent value, unbiased: within- plus between-channel spread."""
        self._need(2)
        values = self.count * self.channels
        spread = torch.diagonal(self.scatter).sum() + self.count * ((self.mean - self.mean.mean()) ** 2).sum()
        return float(torch.sqrt(spread / (values - 1)))

    def suggested_factors(self) -> dict[str, dict[str, float]]:
        """What a diffusion trainer should use for these latents: 1/std, with the mean as shift or not.

        SD convention (SD 1.x, SDXL): z_model = scaling_factor * z. SD3/FLUX convention:
        z_model = scaling_factor * (z - shift_factor). Both give unit variance over all values.
        """
        scale = 1.0 / self.global_std
        return {
            "sd": {"scaling_factor": scale, "shift_factor": 0.0},
            "sd3_flux": {"scaling_factor": scale, "shift_factor": self.global_mean},
        }

    def summary(self) -> dict:
        """Plain numbers for printing or JSON: counts, per-channel and global moments, suggested factors."""
        return {
            "count": self.count,
            "channels": self.channels,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "min": self.minimum.tolist(),
            "max": self.maximum.tolist(),
            "global_mean": self.global_mean,
            "global_std": self.global_std,
            "suggested": self.suggested_factors(),
        }
