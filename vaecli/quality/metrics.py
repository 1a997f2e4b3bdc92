"""Reconstruction quality: PSNR and SSIM on images in [0, 1]; LPIPS lives in vaecli.quality.lpips.

SSIM follows Wang et al. 2004 as scikit-image computes it with `gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1`: an 11x11 Gaussian window, statistics per channel,
averaged over the window positions that lie fully inside the image, then over channels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

SSIM_SIGMA = 1.5
SSIM_WIN = 11  # 2 * int(3.5 * sigma + 0.5) + 1: scikit-image's window for sigma 1.5 (truncate 3.5)
SSIM_K1, SSIM_K2 = 0.01, 0.03
BAND_ELEMENTS = 1 << 20  # values per band of rows: a float64 temporary of a band is 8 MiB


def _row_bands(x: torch.Tensor, halo: int) -> Iterator[tuple[int, int]]:
    """Output-row ranges [r0, r1) sized so one band of x's rows (plus `halo`) holds about BAND_ELEMENTS values."""
    b, c, h, w = x.shape
    rows = max(1, BAND_ELEMENTS // max(1, b * c * w))
    for r0 in range(0, h - halo, rows):
        yield r0, min(r0 + rows, h - halo)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) pairs in [0, 1] -> (B,) PSNR in dB (inf for identical images), computed in float64.

    The squared error is summed over bands of rows, so memory stays at a band's size at any image size.
    """
    b, c, h, w = x.shape
    sq = torch.zeros(b, dtype=torch.float64, device=x.device)
    for r0, r1 in _row_bands(x, 0):
        sq += (x[:, :, r0:r1].double() - y[:, :, r0:r1].double()).pow(2).flatten(1).sum(1)
    mse = sq / (c * h * w)
    return 10.0 * torch.log10(1.0 / mse)


def _gaussian_1d(device) -> torch.Tensor:
    r = torch.arange(SSIM_WIN, dtype=torch.float64, device=device) - SSIM_WIN // 2
    g = torch.exp(-(r**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()  # (11,), sums to 1; the 2-D window is its outer product


def _ssim_map_sum(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Sum over a band's valid window positions of the SSIM map: (B, C, Hb, W) pairs -> (B, C) float64."""
    c = x.shape[1]
    n = 5 * c  # the five blurred quantities below, blurred in one depthwise call per direction
    row = g.view(1, 1, 1, SSIM_WIN).expand(n, 1, 1, SSIM_WIN)
    col = g.view(1, 1, SSIM_WIN, 1).expand(n, 1, SSIM_WIN, 1)
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 5C, Hb, W)
    blurred = F.conv2d(F.conv2d(stats, row, groups=n), col, groups=n)  # separable, valid: (B, 5C, Hb-10, W-10)
    mx, my, exx, eyy, exy = blurred.double().chunk(5, dim=1)  # each (B, C, Hb-10, W-10)
    vx = exx - mx * mx
    vy = eyy - my * my
    cxy = exy - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.sum(dim=(2, 3))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) pairs in [0, 1] -> (B,) mean SSIM; NaN for images smaller than the 11x11 window.

    Computed over bands of rows, each with the window's 10-row halo, and the map summed band by
    band: the same numbers as one pass over the whole image, in a band's memory (a 3840x2160 pair
    took 4 GB in one pass).
    """
    b, c, h, w = x.shape
    if h < SSIM_WIN or w < SSIM_WIN:
        return torch.full((b,), math.nan, dtype=torch.float64)
    # float32 on the inputs' device: within 1e-6 of the float64 reference, and fast enough on a CPU
    g = _gaussian_1d(x.device).float()
    total = torch.zeros(b, c, dtype=torch.float64, device=x.device)
    halo = SSIM_WIN - 1
    for r0, r1 in _row_bands(x, halo):
        total += _ssim_map_sum(x[:, :, r0 : r1 + halo].float(), y[:, :, r0 : r1 + halo].float(), g)
    return (total / ((h - halo) * (w - halo))).mean(dim=1)  # per channel, then over channels
