"""pytorch-fid's FID Inception-v3 in plain torch: images in [0, 1] -> 2048-d pool3 features.

This is the network of TensorFlow's inception-2015-12-05 graph, the one the original FID code
(bioinf-jku/TTUR) used, as pytorch-fid ports it; it differs from torchvision's Inception-v3 in
three places that change the features:
- 1008 classes instead of 1000 (only the unused `fc` layer; kept so the file loads strictly);
- the average pools inside the A, C and first E blocks leave the zero padding out of the mean
  (`count_include_pad=False`), as TensorFlow's pooling does;
- the last E block (Mixed_7c) pools its side branch with a max pool, not an average pool.

Module names are torchvision's (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.running_mean`,
...), so pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` loads unchanged, strictly.
Preprocessing is pytorch-fid's for the FID block: a bilinear resize to 299x299 without
antialiasing (`align_corners=False`), then [0, 1] -> [-1, 1].
No torchvision at run time: it is not a dependency of vaecli.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .pinned import cached_path, check_pin, load_exactly, read_state_dict

WEIGHTS_NAME = "pt_inception"  # the registry entry of pytorch-fid's weights file
MISSING_HINT = f"rFID skipped: the Inception weights are not cached; run: vaecli fetch-weights {WEIGHTS_NAME}"
INPUT_SIZE = 299  # the size the network was trained at; pytorch-fid resizes every image to it
FEATURE_DIMS = 2048  # pool3, the input of the classifier
NUM_CLASSES = 1008  # TensorFlow's graph has 1008 outputs (1000 classes and 8 unused ones)


class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (TensorFlow's eps 1e-3), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def conv(in_channels: int, out_channels: int, kernel_size, stride: int = 1, padding=0) -> BasicConv2d:
    return BasicConv2d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=padding)


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average over the pixels inside the image only, as TensorFlow pools."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = conv(in_channels, 64, 1)
        self.branch5x5_1 = conv(in_channels, 48, 1)
        self.branch5x5_2 = conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = conv(in_channels, 64, 1)
        self.branch3x3dbl_2 = conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = conv(96, 96, 3, padding=1)
        self.branch_pool = conv(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_tf_avg_pool(x)),
            ],
            dim=1,
        )


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction: strided 3x3, strided double 3x3 and a max pool."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = conv(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = conv(in_channels, 64, 1)
        self.branch3x3dbl_2 = conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = conv(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            dim=1,
        )


class InceptionC(nn.Module):
    """17x17 block: 7x7 convolutions factored into 1x7 and 7x1."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = conv(in_channels, 192, 1)
        self.branch7x7_1 = conv(in_channels, c7, 1)
        self.branch7x7_2 = conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = conv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = conv(in_channels, c7, 1)
        self.branch7x7dbl_2 = conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = conv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = conv(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b7dbl = layer(b7dbl)
        return torch.cat([self.branch1x1(x), b7, b7dbl, self.branch_pool(_tf_avg_pool(x))], dim=1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction: strided 3x3, 7x7 then strided 3x3, and a max pool."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = conv(in_channels, 192, 1)
        self.branch3x3_2 = conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = conv(in_channels, 192, 1)
        self.branch7x7x3_2 = conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = conv(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 outputs; `max_pool` marks the FID graph's last block."""

    def __init__(self, in_channels: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = conv(in_channels, 320, 1)
        self.branch3x3_1 = conv(in_channels, 384, 1)
        self.branch3x3_2a = conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = conv(in_channels, 448, 1)
        self.branch3x3dbl_2 = conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = conv(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(b3),
                self.branch3x3_2b(b3),
                self.branch3x3dbl_3a(b3dbl),
                self.branch3x3dbl_3b(b3dbl),
                self.branch_pool(pooled),
            ],
            dim=1,
        )


class FIDInceptionV3(nn.Module):
    """(B, 3, H, W) images in [0, 1] -> (B, 2048) pool3 features, as pytorch-fid's FID block 3."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = conv(3, 32, 3, stride=2)  # 299 -> 149
        self.Conv2d_2a_3x3 = conv(32, 32, 3)  # -> 147
        self.Conv2d_2b_3x3 = conv(32, 64, 3, padding=1)  # then a max pool -> 73
        self.Conv2d_3b_1x1 = conv(64, 80, 1)
        self.Conv2d_4a_3x3 = conv(80, 192, 3)  # -> 71, then a max pool -> 35
        self.Mixed_5b = InceptionA(192, pool_features=32)  # (B, 256, 35, 35)
        self.Mixed_5c = InceptionA(256, pool_features=64)  # (B, 288, 35, 35)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)  # (B, 768, 17, 17)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)  # (B, 1280, 8, 8)
        self.Mixed_7b = InceptionE(1280, max_pool=False)  # (B, 2048, 8, 8)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        # The published file's classifier: loaded so the file is checked whole, never run for FID.
        self.fc = nn.Linear(FEATURE_DIMS, NUM_CLASSES)
        self.requires_grad_(False)
        self.eval()

    @property
    def mixed(self) -> tuple[nn.Module, ...]:
        """The eleven Inception blocks, 35x35 to 8x8, in order."""
        return (
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
            self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.fc.weight)  # the network's device and dtype
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1  # [0, 1] -> [-1, 1]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in self.mixed:
            x = block(x)
        return F.adaptive_avg_pool2d(x, output_size=(1, 1)).flatten(1)  # (B, 2048, 8, 8) -> (B, 2048)

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu") -> FIDInceptionV3:
        """Load pytorch-fid's weights file (torchvision key layout, 1008-way fc), strictly."""
        model = cls()
        load_exactly(model, read_state_dict(path), f"{path}: not pytorch-fid's FID Inception weights")
        return model.to(device)


def load_inception(device: str | torch.device = "cpu", cache_dir: str | Path | None = None) -> FIDInceptionV3 | None:
    """The FID Inception from the cache, or None when it is not fetched (callers show MISSING_HINT).

    The 96 MB file is hashed against its pinned sha256 on every load (0.2 s here) before
    `torch.load` reads it: a figure that claims to be pytorch-fid's must rest on its weights.
    """
    path = cached_path(WEIGHTS_NAME, cache_dir)
    if path is None:
        return None
    check_pin(WEIGHTS_NAME, path)
    return FIDInceptionV3.from_file(path, device)
