"""PatchGAN discriminator of latent diffusion's autoencoder loss (sgm's NLayerDiscriminator).

It scores overlapping ~70x70 patches as real or reconstructed, which pushes a decoder towards
sharp texture that pixel losses blur away. As in sgm's `use_actnorm=True` variant, ActNorm stands in
for BatchNorm: it needs no batch statistics, so batch size 1 and eval mode behave like training.
"""

from __future__ import annotations

import torch
from torch import nn

from .flows import ActNorm


class NLayerDiscriminator(nn.Module):
    """(B, input_nc, H, W) -> (B, 1, H', W') patch logits; `n_layers` stride-2 stages then two stride-1 convs."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, use_actnorm: bool = True):
        super().__init__()
        norm = ActNorm if use_actnorm else nn.BatchNorm2d
        use_bias = use_actnorm  # BatchNorm carries its own bias; ActNorm's shift is applied before its scale
        kw, padw = 4, 1
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last stage keeps resolution, as in pix2pix
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kw, stride=stride, padding=padw, bias=use_bias),
                norm(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, kw, stride=1, padding=padw))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def _init_weights(m: nn.Module) -> None:
    """pix2pix init: convs N(0, 0.02); norm scales N(1, 0.02). ActNorm re-initialises from data anyway."""
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
