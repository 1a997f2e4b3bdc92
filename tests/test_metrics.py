"""PSNR and SSIM against independent references: scikit-image's SSIM and a float64 numpy PSNR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import structural_similarity

from vaecli.quality import metrics
from vaecli.quality.metrics import psnr, ssim


def _pair(seed: int, h: int = 64, w: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """A natural image crop in [0, 1] and a noisy, blurred-ish version of it: (H, W, 3) each."""
    rng = np.random.default_rng(seed)
    img = data.astronaut()[100 : 100 + h, 150 : 150 + w].astype(np.float64) / 255.0
    noisy = np.clip(img + rng.normal(0, 0.05 * (seed + 1), img.shape), 0, 1)
    return img, noisy


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)[None].float()  # (H, W, 3) -> (1, 3, H, W)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_matches_scikit_image(seed):
    x, y = _pair(seed)
    want = structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1)
    got = float(ssim(_t(x), _t(y))[0])
    assert got == pytest.approx(want, abs=2e-6)  # float32 statistics
    assert got < 0.99  # the pair really differs: the check is not comparing two ones


def test_ssim_batch_items_are_independent_and_identity_is_one():
    x0, y0 = _pair(0)
    x1, y1 = _pair(2, 64, 80)
    batch = ssim(torch.cat([_t(x0), _t(x1)]), torch.cat([_t(y0), _t(y1)]))
    assert batch[0] == pytest.approx(float(ssim(_t(x0), _t(y0))[0]), abs=1e-6)
    assert float(ssim(_t(x0), _t(x0))[0]) == pytest.approx(1.0, abs=1e-6)


def test_ssim_is_nan_below_the_window():
    assert math.isnan(float(ssim(torch.rand(1, 3, 8, 20), torch.rand(1, 3, 8, 20))[0]))


def test_psnr_matches_float64_formula():
    x, y = _pair(1)
    want = 10 * np.log10(1.0 / np.mean((x.astype(np.float32).astype(np.float64) - y.astype(np.float32).astype(np.float64)) ** 2))
    assert float(psnr(_t(x), _t(y))[0]) == pytest.approx(want, rel=1e-9)
    assert math.isinf(float(psnr(_t(x), _t(x))[0]))


def test_banded_metrics_equal_the_references_on_a_large_photograph():
    """A 1029x1031 crop of a real photograph spans several row bands (BAND_ELEMENTS): same SSIM as scikit-image, same PSNR as float64."""
    img = data.retina()[:1031, :1029].astype(np.float64) / 255.0  # (H, W, 3), odd sizes
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 0.03, img.shape), 0, 1)
    assert 3 * img.shape[1] * img.shape[0] > 3 * metrics.BAND_ELEMENTS  # really several bands
    want_ssim = structural_similarity(img, noisy, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1)
    x32, y32 = img.astype(np.float32).astype(np.float64), noisy.astype(np.float32).astype(np.float64)
    want_psnr = 10 * np.log10(1.0 / np.mean((x32 - y32) ** 2))
    assert float(ssim(_t(img), _t(noisy))[0]) == pytest.approx(want_ssim, abs=2e-6)
    assert float(psnr(_t(img), _t(noisy))[0]) == pytest.approx(want_psnr, rel=1e-9)
