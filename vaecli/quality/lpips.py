"""LPIPS (VGG variant, v0.1) in plain torch, so reconstruction quality needs no torchvision.

LPIPS(x, y) = sum over five VGG16 layers l of mean_hw( w_l . (f_l(x)/|f_l(x)| - f_l(y)/|f_l(y)|)^2 ),
with f_l the activations at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 and w_l the learned
per-channel weights of the `lpips` package (richzhang/PerceptualSimilarity).

Module names reproduce both published key layouts, so the original files load unchanged:
`features.{i}.weight` as torchvision's vgg16, `lin{l}.model.1.weight` as lpips' vgg.pth.
Both files are torch pickles, read as `quality.pinned` reads the registry's pinned networks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .pinned import cached_path, check_pin, load_exactly, read_state_dict

LIN_NAME, BACKBONE_NAME = "vgg_lpips", "vgg16"
MISSING_HINT = (f"LPIPS skipped: its weights are not cached (`vaecli fetch-weights {LIN_NAME} {BACKBONE_NAME}` downloads them, 553 MB); "
                "--no-lpips turns this note off")

# torchvision's VGG16 "D" configuration: conv widths, "M" a 2x2 max pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Indices into `features` just after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_SLICE_ENDS = (4, 9, 16, 23, 30)
_CHANNELS = (64, 128, 256, 512, 512)


def vgg16_features() -> nn.Sequential:
    """VGG16's convolutional trunk up to relu5_3, indexed exactly as torchvision's `features`."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU()]
            in_ch = v
    return nn.Sequential(*layers)


class NetLin(nn.Module):
    """One per-channel weighting (a bias-free 1x1 conv to 1 channel); `model.1` keeps lpips' keys."""

    def __init__(self, channels: int):
        super().__init__()
        # index 0 is lpips' dropout, an identity at inference; it only keeps the key at index 1
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _unit_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide each pixel's feature vector by its L2 norm (lpips' normalize_tensor, same eps)."""
    return x / (x.square().sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """Learned perceptual distance between images in [-1, 1]; 0 for identical images."""

    def __init__(self):
        super().__init__()
        # ScalingLayer: the inputs in [-1, 1] mapped to the statistics VGG was trained on
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.features = vgg16_features()
        self.lin0, self.lin1, self.lin2, self.lin3, self.lin4 = (NetLin(c) for c in _CHANNELS)
        self.requires_grad_(False)
        self.eval()

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x - self.shift) / self.scale
        taps, start = [], 0
        for end in _SLICE_ENDS:
            h = self.features[start:end](h)
            taps.append(h)
            start = end
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) x2 in [-1, 1] -> (B,) distances."""
        lins = (self.lin0, self.lin1, self.lin2, self.lin3, self.lin4)
        total = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for lin, fx, fy in zip(lins, self._taps(x), self._taps(y)):
            diff = (_unit_channels(fx) - _unit_channels(fy)).square()  # (B, C_l, H_l, W_l)
            total = total + lin(diff).mean(dim=(1, 2, 3))  # (B, 1, H_l, W_l) -> (B,)
        return total

    @classmethod
    def from_files(cls, lin_path: str | Path, backbone_path: str | Path, device: str | torch.device = "cpu") -> LPIPS:
        """Load lpips' vgg.pth and torchvision's vgg16 file (its classifier keys are ignored)."""
        model = cls()
        state: dict[str, torch.Tensor] = {}
        for path, keep in ((lin_path, "lin"), (backbone_path, "features.")):
            sd = read_state_dict(path)
            state.update({k: v for k, v in sd.items() if k.startswith(keep)})
        load_exactly(model, state, f"{lin_path} / {backbone_path}: LPIPS keys do not match")
        return model.to(device)


def load_lpips(device: str | torch.device = "cpu", cache_dir: str | Path | None = None) -> LPIPS | None:
    """LPIPS from the cache, or None when either file is not fetched (callers show MISSING_HINT).

    The 7 KB linear-layer file is checked against its md5 on every load; the 553 MB backbone was
    hashed when it was downloaded (`vaecli fetch-weights --verify vgg16` re-checks it).
    """
    lin_path, vgg_path = cached_path(LIN_NAME, cache_dir), cached_path(BACKBONE_NAME, cache_dir)
    if lin_path is None or vgg_path is None:
        return None
    check_pin(LIN_NAME, lin_path)
    return LPIPS.from_files(lin_path, vgg_path, device)
