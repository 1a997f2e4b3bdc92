"""A diffusers autoencoder's config.json -> VAEConfig (AutoencoderKL and AutoencoderKLFlux2).

Missing keys take the class's own defaults in diffusers (0.42), as diffusers would: an AutoencoderKL
config without `scaling_factor` means 0.18215. An explicit `"scaling_factor": null` is no missing key:
diffusers keeps it None (its pipelines then fail on the multiplication), so it means "no scale" here,
latents left unscaled and recorded so, with a warning; never 0.18215. Architectures our model cannot compute (other block
types or activations, one quant conv without the other, a decoder wider than the encoder) are
refused, naming the key, rather than loaded into something else.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from ..config import MAX_JSON_CHARS, VAEConfig
from ..errors import ConfigError

# Each class's defaults, where they differ from AutoencoderKL's or matter here.
_DEFAULTS = {
    "AutoencoderKL": {
        "block_out_channels": (64,),
        "layers_per_block": 1,
        "latent_channels": 4,
        "scaling_factor": 0.18215,
        "sample_size": 32,
    },
    "AutoencoderKLFlux2": {
        "block_out_channels": (128, 256, 512, 512),
        "layers_per_block": 2,
        "latent_channels": 32,
        "sample_size": 1024,
        "patch_size": (2, 2),
        "batch_norm_eps": 1e-4,
    },
}
_COMMON = {
    "in_channels": 3,
    "out_channels": 3,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "shift_factor": None,
    "force_upcast": True,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
}


_NULL_KEPT = ("shift_factor", "scaling_factor")  # null is a value of these (none), not "take the default"


def config_from_diffusers(data: Any, source: str) -> VAEConfig:
    """The VAEConfig of a parsed diffusers config.json; ConfigError naming `source` and the key otherwise."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
    cls = data.get("_class_name", "AutoencoderKL")
    if cls not in _DEFAULTS:
        raise ConfigError(f"{source}: _class_name {cls!r} is not a KL autoencoder vaecli runs ({', '.join(_DEFAULTS)})")
    d = {**_COMMON, **_DEFAULTS[cls], **{k: v for k, v in data.items() if v is not None or k in _NULL_KEPT}}

    def fail(key: str, why: str) -> ConfigError:
        return ConfigError(f"{source}: {key}={json.dumps(d.get(key))[:60]}: {why}")

    widths = d["block_out_channels"]
    if not isinstance(widths, (list, tuple)) or not widths or not all(isinstance(w, int) and w > 0 for w in widths):
        raise fail("block_out_channels", "must be a list of positive integers")
    ch = widths[0]
    if any(w % ch for w in widths):
        raise fail("block_out_channels", f"each width must be a multiple of the first ({ch}), as ch * ch_mult")
    levels = len(widths)
    for key, want in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
        types = d.get(key, [want] * levels)
        if not isinstance(types, (list, tuple)) or list(types) != [want] * levels:
            raise fail(key, f"must be {levels} x {want} (other blocks have no latent-diffusion form)")
    if d["act_fn"] != "silu":
        raise fail("act_fn", "only silu (swish) is latent-diffusion's activation")
    if d.get("decoder_block_out_channels") not in (None, widths, list(widths)):
        raise fail("decoder_block_out_channels", "a decoder of other widths than the encoder is not supported")
    if d["use_quant_conv"] != d["use_post_quant_conv"]:
        raise fail("use_post_quant_conv", f"differs from use_quant_conv={d['use_quant_conv']}; vaecli has both quant convs or neither")
    if d.get("latents_mean") is not None or d.get("latents_std") is not None:
        warnings.warn(
            f"{source}: latents_mean/latents_std (a per-channel latent convention) are not applied; latents use scaling_factor only",
            stacklevel=2,
        )
    if "scaling_factor" in data and data["scaling_factor"] is None:
        warnings.warn(f"{source}: scaling_factor is null (no latent scale, as diffusers keeps it), so latents are left unscaled", stacklevel=2)
    size = d["sample_size"][0] if isinstance(d["sample_size"], (list, tuple)) and d["sample_size"] else d["sample_size"]
    latent = d["latent_channels"]
    params = dict(
        ch=ch,
        ch_mult=tuple(w // ch for w in widths),
        num_res_blocks=d["layers_per_block"],
        z_channels=latent,
        in_channels=d["in_channels"],
        out_ch=d["out_channels"],
        resolution=size,
        attn_type="vanilla" if d["mid_block_add_attention"] else "none",
        norm_num_groups=d["norm_num_groups"],
        embed_dim=latent if d["use_quant_conv"] else None,
        scaling_factor=d.get("scaling_factor"),
        shift_factor=d["shift_factor"] if d["shift_factor"] is not None else 0.0,
        force_upcast=d["force_upcast"],
        patch_size=d.get("patch_size"),
        batch_norm_eps=d.get("batch_norm_eps"),
    )
    return VAEConfig.from_dict(params, source)


def load_diffusers_config(path: str | Path) -> VAEConfig:
    """Read a diffusers config.json (bounded in size: it may come from anyone) into a VAEConfig."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_JSON_CHARS + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from None
    if len(text) > MAX_JSON_CHARS:
        raise ConfigError(f"{path}: more than {MAX_JSON_CHARS} characters, longer than any diffusers config")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ConfigError(f"{path}: not valid JSON ({getattr(e, 'msg', 'nested too deeply')})") from None
    return config_from_diffusers(data, str(path))
