"""What a latent file stores, made from the model's raw latents and turned back: layout, then normaliser or scaling.

    raw z (B, C, H, W)  --layout-->  model latents  --normaliser, else scaling-->  stored latent

- layout "spatial": the model latents are z itself. Layout "patchified" (a config with patch_size,
  FLUX.2): 2x2 patches normalised by the BatchNorm statistics in the weights, (B, 4C, H/2, W/2),
  what FLUX.2's transformer consumes. An image is padded to a multiple of factor x patch (16 px for
  FLUX.2), as for any model (reflect, cropped back by decode), never resized.
- a normaliser (`vaecli stats -o FILE`, `encode --normalize FILE`) fitted on the model latents
  replaces the scaling: the file stores normaliser(model latents), and the normaliser itself
  travels in the latent's metadata so decode inverts it with no flags.

Everything a latent needs to come back is in its metadata (`layout`, `normalizer`): decode calls
`to_raw`, which undoes both in reverse order.
"""

from __future__ import annotations

import hashlib

import torch

from ..errors import ConfigError, InputError
from ..io.latents import LAYOUTS
from ..model import AutoencoderKL
from ..stats import normalizer_file
from ..stats.normalizer import LatentNormalizer

SPATIAL, PATCHIFIED = LAYOUTS


def layout_of(vae: AutoencoderKL) -> str:
    """How this model's latents are laid out for its diffusion model."""
    return PATCHIFIED if getattr(vae.config, "patch_size", None) is not None else SPATIAL


def _patch(vae: AutoencoderKL) -> int:
    """The side of a square patch (1: none). FLUX.2's are 2x2; non-square ones are refused."""
    patch = getattr(vae.config, "patch_size", None)
    if patch is None:
        return 1
    pi, pj = patch
    if pi != pj:
        raise ConfigError(f"{vae.config.name or 'model'}: patch_size {pi}x{pj}: only square patches are supported")
    return pi


def pixel_multiple(vae: AutoencoderKL) -> int:
    """Images are padded to a multiple of this: the downsampling factor times the patch side (FLUX.2: 8 x 2)."""
    return vae.downsample_factor * _patch(vae)


def stored_geometry(vae: AutoencoderKL, layout: str) -> tuple[int, int]:
    """(channels, pixels per latent cell) of a stored latent with `layout` from this model."""
    patch = _patch(vae) if layout == PATCHIFIED else 1
    return vae.latent_channels * patch * patch, vae.downsample_factor * patch


def to_model_latents(vae: AutoencoderKL, z: torch.Tensor) -> torch.Tensor:
    """Raw latents (B, C, H, W) -> the model latents of its layout (FLUX.2: (B, 4C, H/2, W/2))."""
    return vae.normalize_latents(z) if layout_of(vae) == PATCHIFIED else z


def from_model_latents(vae: AutoencoderKL, t: torch.Tensor, layout: str) -> torch.Tensor:
    """The inverse of `to_model_latents` for a latent stored with `layout`."""
    if layout == SPATIAL:
        return t
    if layout_of(vae) != PATCHIFIED:
        raise ConfigError(f"a patchified latent needs a model with patch_size and BatchNorm statistics; {vae.config.name or 'this model'} has none")
    return vae.denormalize_latents(t)


def load_normalizer(path) -> tuple[LatentNormalizer, str, str]:
    """(the normaliser, its base64 text for latents' metadata, the sha256 of its file's bytes) from a file."""
    norm, data = normalizer_file.read(path)
    return norm, normalizer_file.to_text(data), hashlib.sha256(data).hexdigest()


def check_normalizer(norm: LatentNormalizer, vae: AutoencoderKL, source: str) -> None:
    """A normaliser must act on this model's latents (ConfigError otherwise: a usage error)."""
    channels = stored_geometry(vae, layout_of(vae))[0]
    if norm.channels != channels:
        raise ConfigError(f"{source}: a normaliser of {norm.channels} channels, but {vae.config.name or 'the model'}'s latents have {channels}")


def to_stored(vae: AutoencoderKL, z: torch.Tensor, normalizer: LatentNormalizer | None, scale: bool) -> torch.Tensor:
    """Raw latents -> what the file stores: model latents, normalised (float64 inside) or scaled."""
    t = to_model_latents(vae, z)
    if normalizer is not None:
        return normalizer(t.cpu())  # float64 parameters on the CPU; the latent goes there next anyway
    return vae.scale_latents(t) if scale else t


def latent_normalizer(text: str | None, path) -> LatentNormalizer | None:
    """The normaliser a latent's metadata carries (checked; InputError naming the file), or None."""
    if text is None:
        return None
    try:
        return normalizer_file.from_text(text, f"{path}: metadata normalizer")
    except ConfigError as e:
        raise InputError(str(e)) from None


def to_raw(vae: AutoencoderKL, t: torch.Tensor, normalizer: LatentNormalizer | None, layout: str) -> torch.Tensor:
    """Model latents (or normalised ones) of a stored latent (B, C', h, w) -> raw latents for `vae.decode`."""
    if normalizer is not None:
        t = normalizer.inverse(t)
    return from_model_latents(vae, t, layout)
