"""Training batches for scripts/train_vae.py: views of the training images at every size, cut into crops.

A *view* is what a user might hand the model: a whole training image or a part of it, at its own
resolution or downscaled, from a few hundred pixels to the full 6000x4000. Each view yields
`crops_per_view` random crops; the crops of one view are consecutive in the batch, so that
`train_vae_model.ImagePooledGroupNorm` normalises them with the view's statistics. Crops of the
same view share its flip and colour-channel permutation (they are one image). Photographs are drawn
more often than art and greyscale images. All randomness comes from one generator, so a resumed run
draws the same batches.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


class ViewSampler:
    def __init__(
        self,
        images: list[np.ndarray],
        weights: list[float],
        crop: int,
        crops_per_view: int,
        seed: int,
        *,
        min_view: int = 256,
        whole_view_prob: float = 0.5,
        device: torch.device | str = "cpu",
    ):
        # (3, H, W) uint8, kept on `device`: on a GPU the crops are cut and resized there
        self.images = [torch.from_numpy(np.array(a)).permute(2, 0, 1).to(device) for a in images]
        self.probs = torch.tensor(weights, dtype=torch.float64) / sum(weights)
        self.crop = crop
        self.crops_per_view = crops_per_view
        self.min_view = max(min_view, crop)
        self.whole_view_prob = whole_view_prob
        self.gen = torch.Generator().manual_seed(seed)
        self.last_view_sides: list[int] = []  # long side of each view of the last batch, in view pixels

    def _uniform(self, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * torch.rand((), generator=self.gen).item()

    def _log_uniform(self, lo: float, hi: float) -> float:
        return math.exp(self._uniform(math.log(lo), math.log(hi))) if hi > lo else hi

    def view_crops(self, crop: int) -> torch.Tensor:
        """One view's crops: (crops_per_view, 3, crop, crop) float in [0, 1]."""
        img = self.images[torch.multinomial(self.probs, 1, generator=self.gen).item()]
        _, h, w = img.shape
        min_view = max(self.min_view, crop)
        # zoom: the view's pixels per source pixel, from "the whole image in min_view pixels" (or the
        # smallest zoom that still fits a crop) up to 1 (full resolution); log-uniform
        zoom = self._log_uniform(min(1.0, max(min_view / max(h, w), crop / min(h, w))), 1.0)
        zh, zw = h * zoom, w * zoom  # the zoomed image's size, in view pixels
        if self._uniform() < self.whole_view_prob:
            vh, vw = zh, zw
        else:  # a part of it, each side log-uniform between the crop and the whole
            vh, vw = self._log_uniform(crop, zh), self._log_uniform(crop, zw)
        top, left = self._uniform(0, zh - vh), self._uniform(0, zw - vw)  # view origin, view pixels
        self.last_view_sides.append(round(max(vh, vw)))
        side = min(crop / zoom, h, w)  # a crop's side in source pixels
        flip, perm = self._uniform() < 0.5, torch.randperm(3, generator=self.gen) if self._uniform() < 0.5 else None
        crops = []
        for _ in range(self.crops_per_view):
            cy = min(max(0, round((top + self._uniform(0, vh - crop)) / zoom)), h - round(side))  # source pixels
            cx = min(max(0, round((left + self._uniform(0, vw - crop)) / zoom)), w - round(side))
            x = img[:, cy : cy + round(side), cx : cx + round(side)].unsqueeze(0).float() / 255  # (1, 3, s, s)
            if x.shape[-1] != crop or x.shape[-2] != crop:
                x = F.interpolate(x, size=(crop, crop), mode="bilinear", antialias=True, align_corners=False)
            crops.append(x.clamp(0, 1))
        x = torch.cat(crops)  # (K, 3, crop, crop)
        if flip:
            x = x.flip(3)
        if perm is not None:
            x = x[:, perm]
        return x

    def batch(self, views: int, crop: int | None = None) -> torch.Tensor:
        """(views * crops_per_view, 3, crop, crop) in [-1, 1]; each view's crops consecutive. `crop`
        (default: the sampler's) may change from batch to batch: one step at 256 pixels, the next at 1024."""
        self.last_view_sides = []
        crop = crop or self.crop
        return torch.cat([self.view_crops(crop) for _ in range(views)]) * 2 - 1


def is_colour(a: np.ndarray) -> bool:
    """False for a greyscale image stored as RGB (all three channels equal)."""
    step = max(1, a.shape[0] // 512)  # a subsample decides as well and is fast on 6000x4000
    s = a[::step, ::step].astype(np.int16)
    return bool(np.abs(s[..., 0] - s[..., 1]).max() > 2 or np.abs(s[..., 1] - s[..., 2]).max() > 2)


def image_weight(kind: str, colour: bool, photo_weight: float) -> float:
    """Sampling weight: colour photographs `photo_weight`, art 1, greyscale images 0.5."""
    if not colour:
        return 0.5
    return photo_weight if kind == "photo" else 1.0
