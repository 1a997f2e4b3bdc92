"""Tensor names: latent-diffusion (ldm/sgm) <-> diffusers, and diffusers' arguments for a config.

The ldm names are the model's own (vaecli.model keeps them byte-identical); a diffusers file is
renamed on load. REFERENCE.md section 3 has the table this implements.
"""

from __future__ import annotations

import re

from ..config import VAEConfig

# diffusers -> ldm renames that need no index arithmetic, applied after the block renames below.
_DIFFUSERS_ATTN = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
    "query": "q",  # legacy diffusers attention names
    "key": "k",
    "value": "v",
    "proj_attn": "proj_out",
}


# FLUX.2's original ae.safetensors keeps the quant convs inside the encoder and decoder.
_INNER_QUANT_CONVS = {"encoder.quant_conv.": "quant_conv.", "decoder.post_quant_conv.": "post_quant_conv."}


def ldm_key(key: str) -> str:
    """An ldm-layout key under the model's own name: FLUX.2's inner quant convs moved to the top."""
    for inner, outer in _INNER_QUANT_CONVS.items():
        if key.startswith(inner):
            return outer + key[len(inner) :]
    return key


def diffusers_to_ldm_key(key: str, num_resolutions: int) -> str:
    """One diffusers AutoencoderKL key -> its latent-diffusion name (see REFERENCE.md section 3)."""
    key = re.sub(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out.", key)
    key = re.sub(r"\.conv_shortcut\.", ".nin_shortcut.", key)
    key = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", key)
    key = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", key)

    def up(m: re.Match) -> str:  # diffusers counts up blocks from the bottom, ldm from the top
        level = num_resolutions - 1 - int(m.group(1))
        return f"decoder.up.{level}.{m.group(2)}."

    key = re.sub(r"^decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.", up, key)
    key = re.sub(r"^decoder\.up\.(\d+)\.resnets\.", r"decoder.up.\1.block.", key)
    key = re.sub(r"^decoder\.up\.(\d+)\.upsamplers\.0\.", r"decoder.up.\1.upsample.", key)
    key = re.sub(r"\.mid_block\.resnets\.0\.", ".mid.block_1.", key)
    key = re.sub(r"\.mid_block\.resnets\.1\.", ".mid.block_2.", key)
    m = re.match(r"^(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)$", key)
    if m and m.group(2) in _DIFFUSERS_ATTN:
        key = f"{m.group(1)}.mid.attn_1.{_DIFFUSERS_ATTN[m.group(2)]}.{m.group(3)}"
    return key


def diffusers_vae_kwargs(config: VAEConfig) -> dict:
    """Arguments of diffusers' AutoencoderKL with `config`'s architecture (no diffusers import needed).

    For comparing against diffusers, the independent reference. diffusers has no per-level attention
    (kl-f16/f32), ties the quant convs' width to the latent channels and has no fixed-statistics
    norms (vaecli's `norm_type: affine`); such configs have no twin.
    """
    if config.attn_resolutions or config.norm_type != "group" or (config.embed_dim is not None and config.embed_dim != config.z_channels):
        raise ValueError(f"{config.name or 'config'}: diffusers' AutoencoderKL has no equivalent architecture")
    levels = len(config.ch_mult)
    return dict(
        in_channels=config.in_channels,
        out_channels=config.out_ch,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(config.ch * m for m in config.ch_mult),
        layers_per_block=config.num_res_blocks,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        sample_size=config.resolution,
        scaling_factor=config.scaling_factor if config.scaling_factor is not None else 1.0,
        shift_factor=config.shift_factor,
        use_quant_conv=config.embed_dim is not None,
        use_post_quant_conv=config.embed_dim is not None,
    )


def is_diffusers_layout(keys) -> bool:
    return any(".down_blocks." in k or ".up_blocks." in k or ".mid_block." in k for k in keys)
