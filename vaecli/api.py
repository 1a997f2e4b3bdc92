"""The Python entry point: build a ready-to-run AutoencoderKL from a model name, a config file and/or a weights file."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .config import VAEConfig, load_config, shipped_config, shipped_config_names
from .errors import ConfigError
from .model import AutoencoderKL
from .runtime.device import pick_device, resolve_dtype
from .weights import registry
from .weights.checkpoints import (
    config_from_weights,
    guess_config_from_weights,
    load_weights,
)
from .weights.locate import model_config, resolve_model


def _guessed(weights: Path, allow_pickle: bool) -> VAEConfig:
    """The architecture a file's shapes describe, with a warning: its latent scale, its GroupNorm group
    count (a GroupNorm has no tensor of that size) and whether its norms take statistics at all (fixed
    ones, `norm_type: affine`, have GroupNorm's tensors) cannot be known, so the scale is left out and
    the norms assumed to be every published model's."""
    cfg = guess_config_from_weights(weights, allow_pickle)
    same = [n for n in shipped_config_names() if shipped_config(n).architecture() == cfg.architecture()]
    hint = f" (the architecture of {', '.join(same)})" if same else ""
    warnings.warn(
        f"{weights}: architecture read from its tensor shapes{hint}; its latent scale is unknown, so latents are "
        f"left unscaled, and its GroupNorm group count cannot be read from shapes, so {cfg.norm_num_groups} is assumed, "
        "with GroupNorm statistics (a model with fixed ones, norm_type affine, has the same tensors and decodes wrongly so): "
        "name the model (--model NAME --weights FILE) or give --config (its YAML or config.json) to use its scale and norms",
        stacklevel=3,
    )
    return cfg


def load_vae(
    model: str | None = None,
    *,
    config: str | Path | VAEConfig | None = None,
    weights: str | Path | None = None,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    allow_pickle: bool = False,
) -> AutoencoderKL:
    """Load a VAE in eval mode on `device` in `dtype`.

    - `model`: a registry name, a Hugging Face repository `ORG/REPO[/SUBFOLDER]` (fetched by
      `vaecli fetch-weights`, or already in the Hugging Face cache), or a diffusers folder
      (config.json + diffusion_pytorch_model.safetensors): its config, and its weights unless
      `weights` is given;
    - `config`: a YAML path (ours or an LDM/sgm config.yaml) or a VAEConfig; overrides the model's;
    - `weights`: a safetensors file (a full single-file checkpoint too: its VAE is found by prefix);
      one written by vaecli carries its config and needs no other; for any other file without a
      config the architecture is read from its tensor shapes, with latents left unscaled.
    With none of them, the embedded default model is loaded. dtype "auto" never picks float16 for
    a model that overflows in it (diffusers' force_upcast).

    Safe on files from others (a latent's metadata names a config and a weights file): configs are
    bounded (config.LIMITS), and the weights file is judged before any model is built; a config
    whose architecture differs from the one a self-describing file carries is refused, naming both.
    """
    dev = pick_device(device)
    dt = resolve_dtype(dtype, dev)
    if model is None and config is None and weights is None:
        model = registry.DEFAULT_MODEL
    cfg: VAEConfig | None
    if isinstance(config, VAEConfig):
        cfg = config
    elif config is not None:
        cfg = load_config(config)
    else:
        cfg = None
    if weights is None:
        if model is None:
            raise ConfigError("a config alone has no weights: give a weights file (--weights) or a model (--model)")
        model_cfg, weights = resolve_model(model)
        cfg = cfg or model_cfg
    elif cfg is None and model is not None:
        cfg = model_config(model)
    if cfg is None:
        cfg = config_from_weights(weights) or _guessed(Path(weights), allow_pickle)
    if model is not None and cfg.name is None:
        cfg = cfg.replace(name=model)
    if dtype in (None, "auto") and dt == torch.float16 and cfg.force_upcast:
        dt = torch.float32
    return load_weights(cfg, weights, device=dev, dtype=dt, allow_pickle=allow_pickle)
