"""Weights files: safetensors by default, pickle only when allowed; ldm and diffusers layouts.

The loader reads tensor names and shapes first, checks them all against the model (strictly: one
error lists missing, unexpected and mis-shaped keys with counts), and only then reads each tensor
once, straight into the target dtype and device, and assigns it into a model built on the meta
device. No second full copy of the weights is made.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..config import VAEConfig
from ..errors import CheckpointError
from ..io.atomic import atomic_path
from ..model import AutoencoderKL
from .keymap import diffusers_to_ldm_key, is_diffusers_layout

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
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


def _check_safetensors_header(path: Path) -> None:
    """Say what a file is when it is not safetensors, instead of a library's cryptic error."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a weights file")
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise CheckpointError(
            f"{path}: a pickle (torch.save) checkpoint, not safetensors; pass --allow-pickle to load it "
            "with weights_only=True, or convert it to safetensors"
        )
    if len(head) < 9:
        raise CheckpointError(f"{path}: truncated: {size} bytes is too short for a safetensors header")
    (header_len,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or 8 + header_len > size:
        raise CheckpointError(f"{path}: not a safetensors file, or truncated (header says {header_len} bytes)")


class _Source:
    """Lazy view over a checkpoint: names and shapes now, each tensor when asked for."""

    def __init__(self, names: dict[str, str], shape: Callable[[str], tuple], get: Callable[[str], torch.Tensor], metadata: dict):
        self.names = names  # ldm name -> name in the file
        self.shape = shape  # file name -> shape
        self.get = get  # file name -> tensor
        self.metadata = metadata


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (empty for none)."""
    path = Path(path)
    _check_safetensors_header(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from None


def config_from_weights(path: str | Path) -> VAEConfig | None:
    """The vaecli config stored in a self-describing safetensors file, if any."""
    meta = read_metadata(path)
    text = meta.get(CONFIG_METADATA_KEY)
    return None if text is None else VAEConfig.from_json(text, f"{path} metadata")


def _map_names(file_keys, num_resolutions: int) -> dict[str, str]:
    cleaned = {}
    for k in file_keys:
        c = _clean_key(k)
        if c is not None:
            cleaned[c] = k
    if is_diffusers_layout(cleaned):
        cleaned = {diffusers_to_ldm_key(c, num_resolutions): k for c, k in cleaned.items()}
    return cleaned


def _open(path: Path, allow_pickle: bool, device: torch.device, num_resolutions: int, stack) -> _Source:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise CheckpointError(
                f"{path}: pickle checkpoints can run code when loaded and are refused by default; "
                "pass --allow-pickle (loaded with weights_only=True) or convert to safetensors"
            )
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: empty file (0 bytes), not a weights file")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise CheckpointError(f"{path}: cannot load pickle checkpoint with weights_only=True ({str(e).splitlines()[0]})") from None
        sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise CheckpointError(f"{path}: pickle file holds no state dict of tensors")
        return _Source(_map_names(sd, num_resolutions), lambda k: tuple(sd[k].shape), lambda k: sd[k], {})
    _check_safetensors_header(path)
    try:
        f = stack.enter_context(safe_open(str(path), framework="pt", device=str(device) if device.type == "cuda" else "cpu"))
        keys = list(f.keys())
        metadata = dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from None

    def get(k: str) -> torch.Tensor:
        try:
            return f.get_tensor(k)
        except Exception as e:
            raise CheckpointError(f"{path}: tensor {k} is unreadable ({e}); the file may be truncated") from None

    return _Source(_map_names(keys, num_resolutions), lambda k: tuple(f.get_slice(k).get_shape()), get, metadata)


def _fit_shape(got: tuple, want: tuple) -> bool:
    """Attention projections are Linear [C, C] in diffusers and 1x1 conv [C, C, 1, 1] in ldm."""
    return got == want or (len(got) == 2 and want == (*got, 1, 1))


def _format_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else f" ({len(keys)})")


def load_weights(
    config: VAEConfig,
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    allow_pickle: bool = False,
) -> AutoencoderKL:
    """Build `config`'s model and fill it from `path`, strictly, in `dtype` on `device`."""
    import contextlib

    path = Path(path)
    device = torch.device(device)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    with torch.device("meta"):
        model = AutoencoderKL(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    with contextlib.ExitStack() as stack:
        src = _open(path, allow_pickle, device, len(config.ch_mult), stack)
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
            name = config.name or "the config"
            raise CheckpointError(f"{path}: does not match {name}: " + "; ".join(problems))
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
