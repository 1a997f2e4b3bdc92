"""A latent normaliser fitted from data: ActNorm, optionally followed by a whitening Glow LU 1x1 convolution.

ActNorm (vaecli.model.flows, seed 001) is set as its data-dependent initialisation would set it on
the whole data set at once, loc = -mean and scale = 1 / (std + eps) per channel, but from streaming
float64 moments. With whitening, the LU-parameterised 1x1 convolution (seed 003) is set to the
symmetric (ZCA) whitening matrix of the channel correlation left after ActNorm, W = R^(-1/2), so the
output's channel covariance is the identity while each channel stays as close as possible to its
input. Both maps are linear, exactly invertible and have an O(C) log-determinant; everything is
computed and stored in float64, so a round trip is exact to far below float32 rounding.

File format: safetensors holding the module's state dict (`actnorm.loc`, `actnorm.scale`,
`actnorm.initialized`, and with whitening `invconv.P`, `.L`, `.U`, `.log_s`, `.sign_s`,
`.lower_mask`, `.eye`, the names flows.py gives them), metadata `format` = NORMALIZER_FORMAT plus
what it was fitted on. The same bytes travel base64-encoded inside a latent's metadata, so a latent
can be inverted with no second file; they are checked as strictly as any file from others.
"""

from __future__ import annotations

import base64
import binascii
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import nn

from ..errors import ConfigError
from ..io.atomic import atomic_path
from ..model.flows import ACTNORM_EPS, ActNorm, Invertible1x1Conv
from ..weights.formats import header_of_bytes
from .moments import LatentMoments

NORMALIZER_FORMAT = "vaecli-latent-normalizer/1"
MAX_CHANNELS = 1024  # FLUX.2's patchified latents have 128; the bound keeps a crafted file small
MAX_BYTES = 64 << 20
MIN_EIGEN_RATIO = 1e-10  # whitening a covariance worse conditioned than this would amplify noise
_OWN_KEYS = ("format", "channels", "whiten", "logdet_per_cell")  # metadata to_bytes writes itself


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

    def to_bytes(self) -> bytes:
        """The normaliser file's bytes (safetensors), with its metadata."""
        meta = dict(self.metadata)
        meta.update(format=NORMALIZER_FORMAT, channels=str(self.channels), whiten=str(self.whiten).lower(), logdet_per_cell=repr(self.logdet_per_cell()))
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        return save_bytes(state, metadata=meta)

    def save(self, path: str | Path) -> None:
        """Write the normaliser file atomically."""
        data = self.to_bytes()
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(data)

    def to_text(self) -> str:
        """The file's bytes as base64 text, to travel in a latent's metadata."""
        return base64.b64encode(self.to_bytes()).decode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "normaliser") -> LatentNormalizer:
        """A normaliser from file bytes, every tensor checked (they may come from anyone)."""
        if len(data) > MAX_BYTES:
            raise ConfigError(f"{source}: {len(data)} bytes, more than any normaliser ({MAX_BYTES})")
        header = header_of_bytes(data)
        if header is None:
            raise ConfigError(f"{source}: not a normaliser file (no safetensors header)")
        meta = header.metadata
        if meta.get("format") != NORMALIZER_FORMAT:
            raise ConfigError(f"{source}: format {meta.get('format')!r}, expected {NORMALIZER_FORMAT}")
        try:
            state = load_bytes(data)
        except SafetensorError as e:
            raise ConfigError(f"{source}: unreadable normaliser file ({e})") from None
        loc = state.get("actnorm.loc")
        channels = loc.shape[1] if loc is not None and loc.ndim == 4 else 0
        if not 0 < channels <= MAX_CHANNELS:
            raise ConfigError(f"{source}: actnorm.loc must have shape (1, C, 1, 1) with 1 <= C <= {MAX_CHANNELS}")
        norm = cls(channels, whiten="invconv.P" in state)
        _check_state(norm, state, source)
        norm.load_state_dict(state, strict=True)
        norm.metadata = {k: v for k, v in meta.items() if k not in _OWN_KEYS}
        return norm

    @classmethod
    def load(cls, path: str | Path) -> LatentNormalizer:
        path = Path(path)
        try:
            size = path.stat().st_size
            if size > MAX_BYTES:
                raise ConfigError(f"{path}: {size} bytes, more than any normaliser ({MAX_BYTES})")
            data = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read normaliser ({e.strerror or e})") from None
        return cls.from_bytes(data, str(path))

    @classmethod
    def from_text(cls, text: str, source: str = "latent metadata") -> LatentNormalizer:
        if len(text) > MAX_BYTES * 4 // 3 + 4:
            raise ConfigError(f"{source}: normaliser text longer than any normaliser")
        try:
            data = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise ConfigError(f"{source}: normaliser is not base64 text") from None
        return cls.from_bytes(data, source)


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
    conv.L.copy_(lower)
    conv.U.copy_(torch.triu(upper, diagonal=1))
    conv.sign_s.copy_(torch.sign(diag))
    conv.log_s.copy_(torch.log(torch.abs(diag)))


def _check_state(norm: LatentNormalizer, state: dict[str, torch.Tensor], source: str) -> None:
    """Same names, shapes and dtypes as `norm`'s own, finite, and the structure the LU form needs."""
    want = norm.state_dict()
    if set(state) != set(want):
        diff = sorted(set(state) ^ set(want))
        raise ConfigError(f"{source}: tensors {', '.join(diff[:5])} do not fit a normaliser of {norm.channels} channels")
    for k, v in want.items():
        t = state[k]
        if t.shape != v.shape or t.dtype != v.dtype:
            raise ConfigError(f"{source}: {k} is {t.dtype} {list(t.shape)}, expected {v.dtype} {list(v.shape)}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ConfigError(f"{source}: {k} holds NaN or infinite values")
    if int(state["actnorm.initialized"]) != 1 or (state["actnorm.scale"] == 0).any():
        raise ConfigError(f"{source}: actnorm is not initialised, or has a zero scale (not invertible)")
    if norm.invconv is not None:
        c = norm.channels
        p = state["invconv.P"]
        is_permutation = ((p == 0) | (p == 1)).all() and (p.sum(0) == 1).all() and (p.sum(1) == 1).all()
        fixed = torch.equal(state["invconv.lower_mask"], torch.tril(torch.ones(c, c, dtype=p.dtype), diagonal=-1))
        fixed = fixed and torch.equal(state["invconv.eye"], torch.eye(c, dtype=p.dtype))
        signs = (state["invconv.sign_s"].abs() == 1).all()
        if not (is_permutation and fixed and signs) or state["invconv.log_s"].abs().max() > math.log(1e30):
            raise ConfigError(f"{source}: the 1x1 convolution's LU factors are malformed (P not a permutation, or masks, signs or scales wrong)")
