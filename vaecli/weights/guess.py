"""What a VAE's tensor shapes reveal: facts to check a config against, or a whole architecture when none is given.

Shapes tell the architecture, never the latent convention: SD 1.x and SDXL files (and SD3 and FLUX.1
files) have identical shapes and different scales (REFERENCE.md section 1). A guessed config therefore
leaves latents unscaled; naming the model (`--model sdxl-vae --weights FILE`) gives its scale.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..config import VAEConfig
from ..errors import CheckpointError, ConfigError
from .tensor_source import VAE_PREFIXES, TensorSource

GUESS_RESOLUTION = 256  # attn_resolutions are read against it; every published config uses 256
FLUX2_BATCH_NORM_EPS = 1e-4  # not stored in the file; FLUX.2 is the only model with this normalisation
FLUX2_PATCH = (2, 2)


def _shapes(src: TensorSource) -> dict[str, tuple]:
    return {k: tuple(src.shape(n)) for k, n in src.names.items()}


def _levels(shape: dict[str, tuple]) -> int | None:
    levels = {int(m.group(1)) for k in shape if (m := re.match(r"encoder\.down\.(\d+)\.", k))}
    return max(levels) + 1 if levels else None


def _blocks(shape: dict[str, tuple], level: int) -> int | None:
    blocks = {int(m.group(1)) for k in shape if (m := re.match(rf"encoder\.down\.{level}\.block\.(\d+)\.", k))}
    return max(blocks) + 1 if blocks else None


def file_facts(src: TensorSource) -> dict[str, int | None]:
    """The architecture facts the file's tensor names and shapes reveal (ldm names, after mapping)."""
    shape = _shapes(src)

    def dim(key: str, axis: int) -> int | None:
        return shape[key][axis] if key in shape and len(shape[key]) > axis else None

    facts = {"ch": dim("encoder.conv_in.weight", 0), "in_channels": dim("encoder.conv_in.weight", 1)}
    facts["out_ch"] = dim("decoder.conv_out.weight", 0)
    facts["z_channels"] = dim("decoder.conv_in.weight", 1)
    if "decoder.conv_in.weight" in shape:  # a file with a decoder tells whether it has quant convs
        facts["embed_dim"] = dim("post_quant_conv.weight", 1)
    facts["levels"] = _levels(shape)
    facts["num_res_blocks"] = _blocks(shape, 0)
    return {k: v for k, v in facts.items() if v is not None or k == "embed_dim"}


def _cannot(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: cannot tell the VAE's architecture from its tensors: {why}; give --config or --model")


def _mid_attention(shape: dict[str, tuple]) -> str:
    if "encoder.mid.attn_1.q.weight" in shape:
        return "vanilla"
    if "encoder.mid.attn_1.to_qkv.weight" in shape:
        return "linear"
    return "none"  # diffusers' mid_block_add_attention=False


def guess_config(path: Path, src: TensorSource) -> VAEConfig:
    """The architecture `src`'s tensor shapes describe; latents unscaled (see the module docstring)."""
    shape = _shapes(src)
    needed = ("encoder.conv_in.weight", "encoder.conv_out.weight", "decoder.conv_in.weight", "decoder.conv_out.weight")
    absent = [k for k in needed if k not in shape]
    if absent:
        where = f"under {src.prefix}" if src.prefix else f"at the top level or under {' or '.join(VAE_PREFIXES)}"
        raise _cannot(path, f"no {', '.join(absent)} {where} (not a KL autoencoder?)")
    facts = file_facts(src)
    ch, levels, blocks = facts["ch"], facts["levels"], facts["num_res_blocks"]
    if levels is None or blocks is None:
        raise _cannot(path, "no encoder.down.* blocks")
    widths = []
    for level in range(levels):
        last = f"encoder.down.{level}.block.{(_blocks(shape, level) or 1) - 1}.conv2.weight"
        if last not in shape or shape[last][0] % ch:
            raise _cannot(path, f"{last} is missing or not a multiple of ch={ch} channels wide")
        widths.append(shape[last][0] // ch)
    z = facts["z_channels"]
    moments = shape["encoder.conv_out.weight"][0]
    if moments not in (z, 2 * z):
        raise _cannot(path, f"encoder.conv_out has {moments} channels for z_channels={z}")
    attn_levels = [i for i in range(levels) if any(k.startswith(f"encoder.down.{i}.attn.") for k in shape)]
    latent = facts["embed_dim"] or z
    patch = eps = None
    if "bn.running_mean" in shape:
        if shape["bn.running_mean"] != (latent * FLUX2_PATCH[0] * FLUX2_PATCH[1],):
            raise _cannot(path, f"bn.running_mean {list(shape['bn.running_mean'])} fits no 2x2 patches of {latent} channels (FLUX.2's)")
        patch, eps = FLUX2_PATCH, FLUX2_BATCH_NORM_EPS
    params = dict(
        ch=ch,
        ch_mult=tuple(widths),
        num_res_blocks=blocks,
        z_channels=z,
        double_z=moments == 2 * z,
        in_channels=facts["in_channels"],
        out_ch=facts["out_ch"],
        resolution=GUESS_RESOLUTION,
        attn_resolutions=tuple(GUESS_RESOLUTION >> i for i in attn_levels),
        attn_type=_mid_attention(shape),
        embed_dim=facts["embed_dim"],
        patch_size=patch,
        batch_norm_eps=eps,
        description=f"architecture read from the tensor shapes of {path.name}; latent scale unknown",
    )
    try:
        return VAEConfig(**params)
    except ConfigError as e:
        raise _cannot(path, str(e)) from None
