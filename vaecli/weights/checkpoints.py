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
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..config import VAEConfig
from ..errors import CheckpointError
from ..io.atomic import atomic_path
from ..model import AutoencoderKL
from .formats import ZIP_SIGNATURE, SafetensorsHeader, pickle_refused, read_header
from .keymap import diffusers_to_ldm_key, is_diffusers_layout

CONFIG_METADATA_KEY = "vaecli_config"
STRIP_PREFIXES = ("first_stage_model.", "vae.")
DROP_PREFIXES = ("loss.", "model_ema.")
_MAX_LISTED = 5


def _clean_key(key: str) -> str | None:
    for prefix in STRIP_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    return None if key.startswith(DROP_PREFIXES) else key


class _Source:
    """Lazy view over a checkpoint: names and shapes now, each tensor when asked for."""

    def __init__(self, names: dict[str, str], shape: Callable[[str], tuple], get: Callable[[str], torch.Tensor]):
        self.names = names  # ldm name -> name in the file
        self.shape = shape  # file name -> shape
        self.get = get  # file name -> tensor


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


def _map_names(file_keys, num_resolutions: int) -> dict[str, str]:
    cleaned = {}
    for k in file_keys:
        c = _clean_key(k)
        if c is not None:
            cleaned[c] = k
    if is_diffusers_layout(cleaned):
        cleaned = {diffusers_to_ldm_key(c, num_resolutions): k for c, k in cleaned.items()}
    return cleaned


def _torch_load(path: Path):
    """torch.load with weights_only=True, memory-mapped where torch can: a zip container (not the
    legacy format) under a name torch does not hand to safetensors instead (`*.safetensors`)."""
    with open(path, "rb") as f:
        if f.read(len(ZIP_SIGNATURE)) == ZIP_SIGNATURE and path.suffix.lower() != ".safetensors":
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        f.seek(0)
        return torch.load(f, map_location="cpu", weights_only=True)


def _open(path: Path, header: SafetensorsHeader | None, allow_pickle: bool, device: torch.device, num_resolutions: int, stack) -> _Source:
    if header is None:
        if not allow_pickle:
            raise pickle_refused(path)
        try:
            obj = _torch_load(path)
        except Exception as e:
            raise CheckpointError(f"{path}: cannot load pickle checkpoint with weights_only=True ({str(e).splitlines()[0]})") from None
        sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise CheckpointError(f"{path}: pickle file holds no state dict of tensors")
        return _Source(_map_names(sd, num_resolutions), lambda k: tuple(sd[k].shape), lambda k: sd[k])
    try:
        f = stack.enter_context(safe_open(str(path), framework="pt", device=str(device) if device.type == "cuda" else "cpu"))
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from None

    def get(k: str) -> torch.Tensor:
        try:
            return f.get_tensor(k)
        except Exception as e:
            raise CheckpointError(f"{path}: tensor {k} is unreadable ({e}); the file may be truncated") from None

    return _Source(_map_names(header.shapes, num_resolutions), header.shapes.__getitem__, get)


def _file_architecture(src: _Source) -> dict[str, int | None]:
    """The architecture facts the file's tensor names and shapes reveal (ldm names, after mapping)."""
    shape = {k: src.shape(n) for k, n in src.names.items()}

    def dim(key: str, axis: int) -> int | None:
        return shape[key][axis] if key in shape and len(shape[key]) > axis else None

    facts = {"ch": dim("encoder.conv_in.weight", 0), "in_channels": dim("encoder.conv_in.weight", 1)}
    facts["out_ch"] = dim("decoder.conv_out.weight", 0)
    facts["z_channels"] = dim("decoder.conv_in.weight", 1)
    if "decoder.conv_in.weight" in shape:  # a file with a decoder tells whether it has quant convs
        facts["embed_dim"] = dim("post_quant_conv.weight", 1)
    levels = {int(m.group(1)) for k in shape if (m := re.match(r"encoder\.down\.(\d+)\.", k))}
    blocks = {int(m.group(1)) for k in shape if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
    facts["levels"] = max(levels) + 1 if levels else None
    facts["num_res_blocks"] = max(blocks) + 1 if blocks else None
    return {k: v for k, v in facts.items() if v is not None or k == "embed_dim"}


def _check_plausible(path: Path, config: VAEConfig, src: _Source) -> None:
    """Refuse a file whose tensors describe another architecture, before the model is built."""
    wanted = {"ch": config.ch, "in_channels": config.in_channels, "out_ch": config.out_ch, "z_channels": config.z_channels}
    wanted.update(embed_dim=config.embed_dim, levels=len(config.ch_mult), num_res_blocks=config.num_res_blocks)
    found = _file_architecture(src)
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


def _check_keys(path: Path, config: VAEConfig, src: _Source, expected: dict[str, tuple]) -> None:
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
        src = _open(path, header, allow_pickle, device, len(config.ch_mult), stack)
        _check_plausible(path, config, src)
        with torch.device("meta"):
            model = AutoencoderKL(config)
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
