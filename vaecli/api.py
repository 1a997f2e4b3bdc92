"""The Python entry point: build a ready-to-run AutoencoderKL from a registry name, a config file and/or a weights file."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import VAEConfig, load_config
from .errors import ConfigError
from .model import AutoencoderKL
from .runtime.device import pick_device, resolve_dtype
from .weights import registry
from .weights.checkpoints import config_from_weights, load_weights


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

    - `model`: a registry name (its config, and its cached weights unless `weights` is given);
    - `config`: a YAML path (ours or an LDM/sgm config.yaml) or a VAEConfig; overrides the model's;
    - `weights`: a safetensors file; one written by vaecli carries its config and needs no other.
    With none of them, the embedded default model is loaded.

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
        cfg = registry.model_config(model) if model is not None else None
    if weights is None:
        if model is None:
            raise ConfigError("a config alone has no weights: give a weights file (--weights) or a model (--model)")
        weights = registry.weights_path(model)
    if cfg is None:
        cfg = config_from_weights(weights)
        if cfg is None:
            raise ConfigError(f"{weights}: carries no vaecli config; give --config or --model to say its architecture")
    if model is not None and cfg.name is None:
        cfg = cfg.replace(name=model)
    return load_weights(cfg, weights, device=dev, dtype=dt, allow_pickle=allow_pickle)
