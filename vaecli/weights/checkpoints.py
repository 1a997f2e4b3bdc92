"""Weights files: safetensors by default, pickle only when allowed; ldm and diffusers layouts.

Weights files and configs travel between people (a latent's metadata names both), so the loader
judges the file before it builds anything: its format from its bytes, the config it carries (if
any) against the one given, and the architecture its tensor shapes reveal. Only then is the model
built on the meta device and every key checked strictly (one error lists missing, unexpected and
mis-shaped keys with counts); each tensor is then read once, straight into the target dtype and
device, and assigned. No second full copy of the weights is made.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config import VAEConfig
from ..errors import CheckpointError
from ..io.atomic import atomic_path
from ..model import AutoencoderKL
from ..model.flux2 import build_autoencoder
from .formats import SafetensorsHeader, read_header
from .guess import file_facts, guess_config
from .tensor_source import TensorSource, open_source

CONFIG_METADATA_KEY = "vaecli_config"
_MAX_LISTED = 5


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (empty for none); CheckpointError for other files."""
    path = Path(path)
    header = read_header(path)
    if header is None:
        raise CheckpointError(f"{path}: a pickle (torch.save) checkpoint, not safetensors: it carries no metadata")
    return header.metadata


def _own_config(path: Path, header: SafetensorsHeader | None) -> VAEConfig | None:
    text = None if header is None else header.metadata.get(CONFIG_METADATA_KEY)
    return None if text is None else VAEConfig.from_json(text, f"{path} metadata")


def config_from_weights(path: str | Path) -> VAEConfig | None:
    """The vaecli config stored in a self-describing safetensors file; None for any other weights."""
    path = Path(path)
    return _own_config(path, read_header(path))


def guess_config_from_weights(path: str | Path, allow_pickle: bool = False) -> VAEConfig:
    """The architecture a weights file's VAE tensors describe (a full checkpoint's included), unscaled.

    Raises CheckpointError naming what is missing when the shapes do not tell a KL autoencoder.
    """
    path = Path(path)
    header = read_header(path)
    with contextlib.ExitStack() as stack:
        return guess_config(path, open_source(path, header, allow_pickle, stack))


def _check_plausible(path: Path, config: VAEConfig, src: TensorSource) -> None:
    """Refuse a file whose tensors describe another architecture, before the model is built."""
    wanted = {"ch": config.ch, "in_channels": config.in_channels, "out_ch": config.out_ch, "z_channels": config.z_channels}
    wanted.update(embed_dim=config.embed_dim, levels=len(config.ch_mult), num_res_blocks=config.num_res_blocks)
    found = file_facts(src)
    differ = [f"{k} {found[k]} (file) vs {wanted[k]} (config)" for k in found if found[k] != wanted[k]]
    if differ:
        raise CheckpointError(f"{path}: its tensors describe another architecture than {config.name or 'the config'}: " + ", ".join(differ))


def _check_own_config(path: Path, config: VAEConfig, header: SafetensorsHeader | None) -> None:
    """Refuse a config given with a self-describing file (by a latent, a flag) that builds another model than the file's own."""
    own = _own_config(path, header)
    differ = [] if own is None else own.architecture_differences(config)
    if differ:
        mine, given = own.name or "unnamed", config.name or "unnamed"
        raise CheckpointError(
            f"{path}: its own config ({mine}) and the config given with it ({given}) describe different architectures: "
            + ", ".join(f"{key} {a} ({mine}) vs {b} ({given})" for key, a, b in differ)
        )


def _fit_shape(got: tuple, want: tuple) -> bool:
    """Attention projections are Linear [C, C] in diffusers and 1x1 conv [C, C, 1, 1] in ldm."""
    return got == want or (len(got) == 2 and want == (*got, 1, 1))


def _format_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else f" ({len(keys)})")


def _check_keys(path: Path, config: VAEConfig, src: TensorSource, expected: dict[str, tuple]) -> None:
    """Every key present, none extra, every shape right: one error lists all three, with counts."""
    missing = sorted(set(expected) - set(src.names))
    unexpected = sorted(src.names[k] for k in set(src.names) - set(expected))
    misshaped = sorted(
        f"{k} {list(src.shape(src.names[k]))} != {list(expected[k])}"
        for k in set(expected) & set(src.names)
        if not _fit_shape(src.shape(src.names[k]), expected[k])
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_format_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_format_keys(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped: {_format_keys(misshaped)}")
    if problems:
        raise CheckpointError(f"{path}: does not match {config.name or 'the config'}: " + "; ".join(problems))


def load_weights(
    config: VAEConfig,
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    allow_pickle: bool = False,
) -> AutoencoderKL:
    """Build `config`'s model and fill it from `path`, strictly, in `dtype` on `device`.

    The file is judged before the model is built: its format from its bytes, its own config (if
    any) against `config`, and its tensor names and shapes against `config`'s architecture.
    """
    path = Path(path)
    device = torch.device(device)
    header = read_header(path)
    _check_own_config(path, config, header)
    with contextlib.ExitStack() as stack:
        src = open_source(path, header, allow_pickle, stack, device)
        _check_plausible(path, config, src)
        with torch.device("meta"):
            model = build_autoencoder(config)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        _check_keys(path, config, src, expected)
        state = {}
        for k, want in expected.items():
            t = src.get(src.names[k])
            if not torch.is_floating_point(t):
                raise CheckpointError(f"{path}: tensor {src.names[k]} has non-float dtype {t.dtype}")
            state[k] = t.to(device=device, dtype=dtype).reshape(want)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def save_weights(model: AutoencoderKL, path: str | Path, metadata: dict[str, str] | None = None, dtype: torch.dtype | None = None) -> None:
    """Write a self-describing safetensors file (ldm layout, config in metadata), atomically."""
    meta = {CONFIG_METADATA_KEY: model.config.to_json(), "format": "pt"}
    meta.update(metadata or {})
    state = {k: (v if dtype is None else v.to(dtype)).detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


def metadata_json(value) -> str:
    """Metadata values must be strings; structured ones are stored as JSON."""
    return json.dumps(value, sort_keys=True)
