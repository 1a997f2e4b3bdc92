"""A latent normaliser fitted from data: ActNorm, optionally followed by a whitening Glow LU 1x1 convolution.

ActNorm (vaecli.model.flows, seed 001) is set as its data-dependent initialisation would set it on
the whole data set at once, loc = -mean and scale = 1 / (std + eps) per channel, but from streaming
float64 moments. With whitening, the LU-parameterised 1x1 convolution (seed 003) is set to the
symmetric (ZCA) whitening matrix of the channel correlation left after ActNorm, W = R^(-1/2), so the
output's channel covariance is the identity while each channel stays as close as possible to its
input. Both maps are linear, exactly invertible and have an O(C) log-determinant; everything is
computed and stored in float64, so a round trip is exact to far below float32 rounding.
Its file format is normalizer_file.py's.
"""

from __future__ import annotations

import torch
from torch import nn

from ..model.flows import ACTNORM_EPS, ActNorm, Invertible1x1Conv
from .moments import LatentMoments

MIN_EIGEN_RATIO = 1e-10  # whitening a covariance worse conditioned than this would amplify noise


class LatentNormalizer(nn.Module):
    """z (B, C, H, W) -> normalised latents; `inverse` undoes it. Parameters in float64."""

    def __init__(self, channels: int, whiten: bool, metadata: dict[str, str] | None = None):
        super().__init__()
        self.metadata = dict(metadata or {})  # what it was fitted on (model, data, count), kept in its file
        self.actnorm = ActNorm(channels, logdet=True)
        self.invconv = Invertible1x1Conv(channels, generator=torch.Generator().manual_seed(0)) if whiten else None
        self.double().requires_grad_(False)  # fitted from statistics, never trained

    @property
    def channels(self) -> int:
        return self.actnorm.loc.shape[1]

    @property
    def whiten(self) -> bool:
        return self.invconv is not None

    @classmethod
    @torch.no_grad()
    def fit(cls, moments: LatentMoments, whiten: bool = False, metadata: dict[str, str] | None = None) -> LatentNormalizer:
        """The normaliser of the data `moments` describe (see the module docstring); `metadata` says what data."""
        norm = cls(moments.channels, whiten, {"count": str(moments.count), **(metadata or {})})
        std = moments.std  # (C,)
        norm.actnorm.loc.copy_(-moments.mean.view(1, -1, 1, 1))  # (1, C, 1, 1)
        norm.actnorm.scale.copy_((1.0 / (std + ACTNORM_EPS)).view(1, -1, 1, 1))  # (1, C, 1, 1)
        norm.actnorm.initialized.fill_(1)
        if whiten:
            scale = norm.actnorm.scale.view(-1)  # (C,)
            corr = moments.covariance * torch.outer(scale, scale)  # (C, C): covariance after ActNorm
            _set_lu(norm.invconv, _inverse_sqrt(corr))
        return norm

    def forward_with_logdet(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> (normalised, log|det J| per item (B,)), computed in float64, returned in z's dtype."""
        y, logdet = self.actnorm(z.to(torch.float64))
        if self.invconv is not None:
            y, logdet_w = self.invconv(y)
            logdet = logdet + logdet_w
        return y.to(z.dtype), logdet

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.forward_with_logdet(z)[0]

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, H, W) -> the latents they came from."""
        x = y.to(torch.float64)
        if self.invconv is not None:
            x, _ = self.invconv(x, reverse=True)
        return self.actnorm.reverse(x).to(y.dtype)

    def logdet_per_cell(self) -> float:
        """log|det| of the map at one latent cell; a latent of H x W cells has H * W times this."""
        total = torch.log(torch.abs(self.actnorm.scale)).sum()
        if self.invconv is not None:
            total = total + self.invconv.log_s.sum()
        return float(total)


def _inverse_sqrt(sym: torch.Tensor) -> torch.Tensor:
    """R^(-1/2) of a symmetric positive definite (C, C) matrix, float64; refuses a near-singular one."""
    eigval, eigvec = torch.linalg.eigh(sym)
    if eigval.min() <= MIN_EIGEN_RATIO * eigval.max():
        raise ValueError(
            f"the latent channels are (nearly) linearly dependent (covariance eigenvalues {float(eigval.min()):.3g} .. "
            f"{float(eigval.max()):.3g}): whitening them would amplify noise; fit without whitening"
        )
    return eigvec @ torch.diag(eigval.rsqrt()) @ eigvec.T


@torch.no_grad()
def _set_lu(conv: Invertible1x1Conv, w: torch.Tensor) -> None:
    """Set the LU parameters so that conv.weight() == w: W = P @ L @ U, diag(U) = sign_s * exp(log_s)."""
    p, lower, upper = torch.linalg.lu(w)
    diag = torch.diagonal(upper)
    conv.P.copy_(p)
    conv.L.copy_(torch.tril(lower, diagonal=-1))  # the unit diagonal is the module's own (its eye buffer)
    conv.U.copy_(torch.triu(upper, diagonal=1))
    conv.sign_s.copy_(torch.sign(diag))
    conv.log_s.copy_(torch.log(torch.abs(diag)))
