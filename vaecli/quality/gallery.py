"""Per-image views for the HTML report: thumbnails, an error heatmap and a full-resolution crop, as small encoded files.

Sizes are chosen so that a report of 1,000 images stays near 100 MB: a thumbnail is at most
THUMB_SIZE pixels on its long side (JPEG), the crop CROP_SIZE pixels square at full resolution
(shown enlarged), the heatmap a thumbnail too. Only these bytes are kept per image, never the
pixels: a run of thousands of large images holds a few hundred KB per image at most.

The crop is placed by the input alone (the window with the most detail), so every model's
reconstruction is cropped at the same place and the crops compare side by side.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..io.images import to_uint8

THUMB_SIZE = 224  # px, long side
CROP_SIZE = 96  # px, square, at full resolution
JPEG_QUALITY = 80
CROP_QUALITY = 92  # the crop is where artefacts are judged: less of the JPEG's own
HEATMAP_FULL_SCALE = 32 / 255  # mean absolute error (over RGB) shown at the top of the colour scale
# A dark-to-bright scale (black, purple, red, orange, pale yellow), readable in print and by most colour-blind readers.
_HEAT_STOPS = np.array([[0, 0, 0], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)


def _jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """(H, W, 3) uint8 -> JPEG bytes (4:4:4 for the crop's sharp edges when quality is high)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    return buf.getvalue()


def thumbnail_size(width: int, height: int) -> tuple[int, int]:
    """(w, h) of the thumbnail: the long side THUMB_SIZE, never enlarged."""
    scale = min(1.0, THUMB_SIZE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _shrink(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) -> (C, h, w) by area averaging (antialiased), float32."""
    w, h = size
    return F.interpolate(x[None].float(), size=(h, w), mode="area")[0] if (h, w) != tuple(x.shape[-2:]) else x.float()


def detail_box(x: torch.Tensor) -> tuple[int, int, int]:
    """(top, left, size) of the CROP_SIZE window with the most detail (summed gradient magnitude) in (3, H, W)."""
    size = min(CROP_SIZE, x.shape[-2], x.shape[-1])
    grey = x.float().mean(dim=0)  # (H, W)
    grad = torch.zeros_like(grey)
    grad[:, 1:] += (grey[:, 1:] - grey[:, :-1]).abs()
    grad[1:, :] += (grey[1:, :] - grey[:-1, :]).abs()
    stride = max(1, size // 2)
    sums = F.avg_pool2d(grad[None, None], kernel_size=size, stride=stride)[0, 0]  # (rows, cols) of windows
    row, col = divmod(int(torch.argmax(sums)), sums.shape[1])
    return row * stride, col * stride, size


def heatmap(x: torch.Tensor, y: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(3, H, W) pair -> (h, w, 3) uint8: mean absolute error over RGB, averaged down to `size`, coloured
    on a fixed scale (0 to HEATMAP_FULL_SCALE), so colours compare across images and models."""
    err = _shrink((x.float() - y.float()).abs().mean(dim=0, keepdim=True), size)[0]  # (h, w)
    t = (err / HEATMAP_FULL_SCALE).clamp(0, 1).numpy() * (len(_HEAT_STOPS) - 1)
    lo = np.minimum(t.astype(np.int64), len(_HEAT_STOPS) - 2)
    frac = (t - lo)[..., None]
    return (_HEAT_STOPS[lo] * (1 - frac) + _HEAT_STOPS[lo + 1] * frac).round().astype(np.uint8)


@dataclass
class InputView:
    width: int
    height: int
    thumb: bytes  # JPEG
    box: tuple[int, int, int]  # (top, left, size) of the crop, in the image's pixels
    crop: bytes  # JPEG, full resolution


@dataclass
class ReconView:
    thumb: bytes  # JPEG
    heat: bytes  # JPEG
    crop: bytes  # JPEG, full resolution, at the input's box
    metrics: dict  # psnr, ssim (, lpips)
    output: str | None  # the full-size reconstruction written by -o, if any


def input_view(x: torch.Tensor) -> InputView:
    """The views of one (3, H, W) input in [0, 1] on the CPU."""
    h, w = x.shape[-2:]
    top, left, size = box = detail_box(x)
    return InputView(w, h, _jpeg(to_uint8(_shrink(x, thumbnail_size(w, h))), JPEG_QUALITY), box,
                     _jpeg(to_uint8(x[:, top : top + size, left : left + size]), CROP_QUALITY))


def recon_view(x: torch.Tensor, y: torch.Tensor, box: tuple[int, int, int], metrics: dict, output: str | None) -> ReconView:
    """The views of one reconstruction `y` of `x`, both (3, H, W) in [0, 1] on the CPU."""
    size = thumbnail_size(x.shape[-1], x.shape[-2])
    top, left, side = box
    return ReconView(_jpeg(to_uint8(_shrink(y, size)), JPEG_QUALITY), _jpeg(heatmap(x, y, size), JPEG_QUALITY),
                     _jpeg(to_uint8(y[:, top : top + side, left : left + side]), CROP_QUALITY), metrics, output)


@dataclass
class GalleryEntry:
    input: InputView
    recons: dict[str, ReconView] = field(default_factory=dict)  # model label -> its reconstruction


class Gallery:
    """Every image's views, keyed by input path, for one or several models run over the same inputs."""

    def __init__(self):
        self.entries: dict[str, GalleryEntry] = {}

    def observer(self, label: str):
        """A roundtrip `observe` callback adding `label`'s reconstruction of each image."""

        def observe(job, x: torch.Tensor, y: torch.Tensor, metrics: dict) -> None:
            key = str(job.input)
            entry = self.entries.get(key)
            if entry is None:
                entry = self.entries[key] = GalleryEntry(input_view(x))
            output = None if job.output is None else str(job.output)
            entry.recons[label] = recon_view(x, y, entry.input.box, metrics, output)

        return observe

    def worst_first(self) -> list[tuple[str, GalleryEntry]]:
        """Entries by their lowest PSNR over the models, lowest first (a perfect one, inf, last)."""

        def worst(item: tuple[str, GalleryEntry]) -> float:
            values = [r.metrics.get("psnr") for r in item[1].recons.values()]
            values = [v for v in values if isinstance(v, float) and not np.isnan(v)]
            return min(values, default=float("inf"))

        return sorted(self.entries.items(), key=worst)
