"""The normaliser file: a LatentNormalizer as compact safetensors bytes, checked tensor by tensor when read.

Tensors, float64 unless said: `actnorm.loc`, `actnorm.scale` (C,); with whitening `invconv.perm`
(C,) int64, the permutation P = I[perm]; `invconv.lu` (C, C), L strictly below the diagonal and U
strictly above it, zeros on it; `invconv.log_s` and `invconv.sign_s` (C,), U's diagonal being
sign_s * exp(log_s) (the parameters of flows.Invertible1x1Conv, packed: C^2 + 4C numbers, 133 KiB
for FLUX.2's 128 patchified channels). Metadata: `format` (NORMALIZER_FORMAT), `channels`,
`whiten`, `logdet_per_cell`, and what it was fitted on (LatentNormalizer.metadata).

The same bytes travel base64-encoded in a latent's metadata, so decode can invert a latent with no
second file; they come from others then, hence the checks.
"""

from __future__ import annotations

import base64
import binascii
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..errors import ConfigError
from ..io.atomic import atomic_path
from ..weights.formats import header_of_bytes
from .normalizer import LatentNormalizer

NORMALIZER_FORMAT = "vaecli-latent-normalizer/1"
MAX_CHANNELS = 1024  # FLUX.2's patchified latents have 128
MAX_BYTES = 16 << 20  # 1024 whitened channels take 8 MiB
MAX_LOG_SCALE = math.log(1e30)
FLOAT32_MAX = 3.4028234663852886e38  # latents are stored in float32: a parameter beyond it can only make inf
_OWN_KEYS = ("format", "channels", "whiten", "logdet_per_cell")  # metadata written here, not kept in .metadata
_ACTNORM = ("actnorm.loc", "actnorm.scale")
_INVCONV = ("invconv.perm", "invconv.lu", "invconv.log_s", "invconv.sign_s")


def to_bytes(norm: LatentNormalizer) -> bytes:
    """The file's bytes."""
    tensors = {"actnorm.loc": norm.actnorm.loc.reshape(-1), "actnorm.scale": norm.actnorm.scale.reshape(-1)}  # (C,)
    if norm.invconv is not None:
        conv = norm.invconv
        tensors["invconv.perm"] = conv.P.argmax(dim=1)  # (C,): row i of P is row perm[i] of I
        tensors["invconv.lu"] = torch.tril(conv.L, diagonal=-1) + torch.triu(conv.U, diagonal=1)  # (C, C)
        tensors["invconv.log_s"] = conv.log_s
        tensors["invconv.sign_s"] = conv.sign_s
    meta = dict(norm.metadata)
    meta.update(format=NORMALIZER_FORMAT, channels=str(norm.channels), whiten=str(norm.whiten).lower(), logdet_per_cell=repr(norm.logdet_per_cell()))
    return save_tensors({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=meta)


def save(norm: LatentNormalizer, path: str | Path, before_replace=None) -> None:
    """Write the file atomically: a reader never sees half of it (`before_replace`: io.atomic's last check)."""
    data = to_bytes(norm)
    with atomic_path(path, before_replace) as tmp:
        Path(tmp).write_bytes(data)


def to_text(norm: LatentNormalizer | bytes) -> str:
    """A normaliser file's bytes (as read, or made from `norm`) as base64, for a latent's (string) metadata."""
    return base64.b64encode(norm if isinstance(norm, bytes) else to_bytes(norm)).decode("ascii")


def _check(t: dict[str, torch.Tensor], source: str) -> tuple[int, bool]:
    """(channels, whiten) of checked tensors; ConfigError naming the first fault."""
    whiten = any(k.startswith("invconv.") for k in t)
    names = set(_ACTNORM) | (set(_INVCONV) if whiten else set())
    if set(t) != names:
        raise ConfigError(f"{source}: tensors {', '.join(sorted(t))}, expected {', '.join(sorted(names))}")
    c = t["actnorm.loc"].numel()
    if not 0 < c <= MAX_CHANNELS:
        raise ConfigError(f"{source}: {c} channels; a normaliser has 1 to {MAX_CHANNELS}")
    for k, v in t.items():
        want = (torch.int64 if k == "invconv.perm" else torch.float64, (c, c) if k == "invconv.lu" else (c,))
        if (v.dtype, tuple(v.shape)) != want:
            raise ConfigError(f"{source}: {k} is {v.dtype} {list(v.shape)}, expected {want[0]} {list(want[1])}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ConfigError(f"{source}: {k} holds NaN or infinite values")
        if v.is_floating_point() and v.abs().max() > FLOAT32_MAX:
            raise ConfigError(f"{source}: {k} holds {float(v.abs().max()):.3g}, beyond float32's range: its latents would be infinite")
    if (t["actnorm.scale"] == 0).any():
        raise ConfigError(f"{source}: actnorm.scale has a zero: not invertible")
    if t["actnorm.scale"].abs().log().abs().max() > MAX_LOG_SCALE:
        raise ConfigError(f"{source}: actnorm.scale is out of range (a scale beyond 1e30 or below 1e-30)")
    if whiten:
        is_permutation = torch.equal(torch.sort(t["invconv.perm"]).values, torch.arange(c))
        signs = bool((t["invconv.sign_s"].abs() == 1).all())
        if not is_permutation or not signs or bool(torch.diagonal(t["invconv.lu"]).any()):
            raise ConfigError(f"{source}: the 1x1 convolution's factors are malformed (perm, signs or the LU diagonal)")
        if t["invconv.log_s"].abs().max() > MAX_LOG_SCALE:
            raise ConfigError(f"{source}: invconv.log_s is out of range (a scale beyond 1e30)")
    return c, whiten


def _check_metadata(meta: dict[str, str], norm: LatentNormalizer, source: str) -> None:
    """The metadata this module writes must say what the tensors say (a file may predate none of it; absent keys pass)."""
    said = {"channels": str(norm.channels), "whiten": str(norm.whiten).lower()}
    for key, want in said.items():
        if key in meta and meta[key] != want:
            raise ConfigError(f"{source}: metadata {key}={meta[key]!r}, but its tensors say {want}")
    if "logdet_per_cell" in meta:
        try:
            logdet = float(meta["logdet_per_cell"])
        except ValueError:
            logdet = math.nan
        want = norm.logdet_per_cell()
        if not math.isclose(logdet, want, rel_tol=1e-9, abs_tol=1e-12):
            raise ConfigError(f"{source}: metadata logdet_per_cell={meta['logdet_per_cell'][:40]!r}, but its tensors give {want!r}")


@torch.no_grad()
def from_bytes(data: bytes, source: str = "normaliser") -> LatentNormalizer:
    """A normaliser from the file's bytes, every tensor checked (they may come from anyone)."""
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{source}: {len(data)} bytes, more than any normaliser ({MAX_BYTES})")
    header = header_of_bytes(data)
    if header is None:
        raise ConfigError(f"{source}: not a normaliser file (no safetensors header)")
    if header.metadata.get("format") != NORMALIZER_FORMAT:
        raise ConfigError(f"{source}: format {header.metadata.get('format')!r}, expected {NORMALIZER_FORMAT}")
    try:
        t = load_tensors(data)
    except SafetensorError as e:
        raise ConfigError(f"{source}: unreadable normaliser file ({e})") from None
    channels, whiten = _check(t, source)
    norm = LatentNormalizer(channels, whiten, {k: v for k, v in header.metadata.items() if k not in _OWN_KEYS})
    norm.actnorm.loc.copy_(t["actnorm.loc"].view(1, -1, 1, 1))  # (1, C, 1, 1)
    norm.actnorm.scale.copy_(t["actnorm.scale"].view(1, -1, 1, 1))
    norm.actnorm.initialized.fill_(1)
    if whiten:
        conv = norm.invconv
        conv.P.copy_(torch.eye(channels, dtype=torch.float64)[t["invconv.perm"]])
        conv.L.copy_(torch.tril(t["invconv.lu"], diagonal=-1))
        conv.U.copy_(torch.triu(t["invconv.lu"], diagonal=1))
        conv.log_s.copy_(t["invconv.log_s"])
        conv.sign_s.copy_(t["invconv.sign_s"])
    _check_metadata(header.metadata, norm, source)
    return norm


def read(path: str | Path) -> tuple[LatentNormalizer, bytes]:
    """The normaliser in a file, and the file's bytes: its identity (the bytes `to_bytes` makes differ from
    one process to the next, safetensors ordering the metadata at random)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read normaliser ({e.strerror or e})") from None
    return from_bytes(data, str(path)), data


def load(path: str | Path) -> LatentNormalizer:
    return read(path)[0]


def from_text(text: str, source: str = "latent metadata") -> LatentNormalizer:
    """A normaliser from the base64 text `to_text` makes."""
    if len(text) > MAX_BYTES * 4 // 3 + 4:
        raise ConfigError(f"{source}: normaliser text longer than any normaliser")
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ConfigError(f"{source}: normaliser is not base64 text") from None
    return from_bytes(data, source)
