"""What the rFID tests share: real photographs, and a seeded random FID Inception with real-looking features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaecli.quality.inception import FIDInceptionV3


def photos() -> dict[str, np.ndarray]:
    """Real colour photographs shipped by scikit-image and scikit-learn, (H, W, 3) uint8."""
    skdata = pytest.importorskip("skimage.data")
    datasets = pytest.importorskip("sklearn.datasets")
    found = {n: getattr(skdata, n)() for n in ("astronaut", "coffee", "chelsea", "hubble_deep_field", "retina")}
    found["china"] = datasets.load_sample_images().images[0]
    return found


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1], as torchvision's ToTensor."""
    return torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255


def random_inception() -> FIDInceptionV3:
    """A seeded random FID Inception whose BatchNorm statistics are measured on real photographs
    (so that every layer carries signal, as trained weights would) with random affine terms, the
    last block's scaled down so that features and FIDs have the magnitudes of the real network's
    (pool3 features of a few tenths; rFIDs of tens, not thousands)."""
    torch.manual_seed(0)
    net = FIDInceptionV3()
    for name, m in net.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            scale = 0.1 if name.startswith("Mixed_7c") else 1.0
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batch
            m.weight.data.uniform_(0.5 * scale, 1.5 * scale)
            m.bias.data.normal_(0.0, 0.2 * scale)
    calibration = torch.cat([to_tensor(p[:299, :299]) for p in list(photos().values())[:3]])  # (3, 3, 299, 299)
    net.train()
    with torch.no_grad():
        net(calibration)
    net.eval()
    return net
