"""Latent files: safetensors with tensor `latent` and string metadata that make them self-describing.

A latent file written here carries everything decode needs (model name, full config, the weights it
came from, scaling convention, original size and padding), and everything resume needs (the source's
size, mtime and sha256). Reading also accepts foreign latents (.npy, .pt holding one tensor, other
.safetensors files) whose model and scaling the user states with flags. Every problem raises
InputError naming the file, so one bad latent fails alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import InputError
from .atomic import atomic_path
from .hashing import file_digest

LATENT_FORMAT_KEY = "vaecli_latent_format"
LATENT_FORMAT_VERSION = "1"
LATENT_SUFFIXES = (".safetensors", ".npy", ".pt")
_FOREIGN_NAMES = ("latent", "latents")


def metadata_string(value) -> str:
    """How a metadata value is stored: booleans as JSON (true/false), everything else as str()."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


@dataclass
class LatentMeta:
    """What a latent file records, as typed fields; stored as string metadata (see `to_strings`)."""

    model: str | None  # registry name, or None for a model given by config/weights files only
    config: str  # the full VAEConfig as JSON: decode rebuilds the architecture from it
    scaling_factor: float | None
    shift_factor: float
    scaled: bool  # True: latent = scaling_factor * (z - shift_factor); False: raw z
    height: int  # the content's size fed to the model before padding: decode crops back to it
    width: int
    original_height: int  # the source file's size (differs from height/width after --resize/--center-crop)
    original_width: int
    size_handling: str = ""  # e.g. "pad reflect right=3 bottom=3 to 520x304", or "none"
    preprocess: str = ""  # JSON of the options that shaped the latent (resize, crop, alpha, seed)
    posterior: str = "mode"  # mode | sample
    seed: int | None = None
    weights: str | None = None  # absolute path of the weights file, when not a registry model
    source: str = ""
    source_size: int | None = None
    source_mtime_ns: int | None = None
    source_sha256: str | None = None
    fps: float | None = None  # video only
    frames: int | None = None  # video only
    vaecli_version: str = ""
    extra: dict = field(default_factory=dict)

    def to_strings(self) -> dict[str, str]:
        out = {LATENT_FORMAT_KEY: LATENT_FORMAT_VERSION}
        for key, value in self.__dict__.items():
            if key != "extra" and value is not None:
                out[key] = metadata_string(value)
        out.update({k: str(v) for k, v in self.extra.items()})
        return out

    @classmethod
    def from_strings(cls, meta: dict[str, str], path: Path) -> "LatentMeta":
        known = set(cls.__dataclass_fields__) - {"extra"}
        try:
            def num(key, kind):
                return kind(meta[key]) if meta.get(key) not in (None, "") else None

            return cls(
                model=meta.get("model"),
                config=meta["config"],
                scaling_factor=num("scaling_factor", float),
                shift_factor=float(meta.get("shift_factor", 0.0)),
                scaled=meta.get("scaled", "true") == "true",
                height=int(meta["height"]),
                width=int(meta["width"]),
                original_height=int(meta.get("original_height", meta["height"])),
                original_width=int(meta.get("original_width", meta["width"])),
                size_handling=meta.get("size_handling", ""),
                preprocess=meta.get("preprocess", ""),
                posterior=meta.get("posterior", "mode"),
                seed=num("seed", int),
                weights=meta.get("weights"),
                source=meta.get("source", ""),
                source_size=num("source_size", int),
                source_mtime_ns=num("source_mtime_ns", int),
                source_sha256=meta.get("source_sha256"),
                fps=num("fps", float),
                frames=num("frames", int),
                vaecli_version=meta.get("vaecli_version", ""),
                extra={k: v for k, v in meta.items() if k not in known and k != LATENT_FORMAT_KEY},
            )
        except (KeyError, ValueError) as e:
            raise InputError(f"{path}: damaged vaecli latent metadata ({type(e).__name__}: {e})") from None


@dataclass
class Latent:
    """A latent read from disk: (C, h, w) for an image or (T, C, h, w) for a video."""

    tensor: torch.Tensor
    meta: LatentMeta | None  # None for a foreign latent
    path: Path

    @property
    def is_video(self) -> bool:
        return self.tensor.ndim == 4


def source_fingerprint(path: Path) -> dict:
    """Size, mtime and sha256 of a source file: recorded so a rerun can tell when it changed."""
    st = path.stat()
    return {"source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns, "source_sha256": file_digest(path)}


def write_latent(path: str | Path, latent: torch.Tensor, meta: LatentMeta, *, mean=None, logvar=None) -> None:
    """Write tensor `latent` (and `mean`/`logvar` with --save-dist) atomically."""
    # clone: with --no-scale the latent *is* the mean, and safetensors refuses tensors sharing memory
    tensors = {"latent": latent.detach().cpu().clone()}
    if mean is not None:
        tensors["mean"] = mean.detach().cpu().clone()
        tensors["logvar"] = logvar.detach().cpu().clone()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta.to_strings())


def read_latent_metadata(path: Path) -> dict[str, str] | None:
    """The string metadata of a safetensors file, or None when the file is unreadable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return None


def is_fresh(output: Path, source: Path, recipe: dict[str, str | None] | None = None) -> bool:
    """True when `output` is a readable latent made from `source` as it is now, the same way.

    `recipe`: metadata values that must match (model, config, scaling, options; None: absent), so
    switching model or options redoes the file instead of keeping a latent of another kind.
    Source size differs -> stale. Same size but another mtime -> stale unless the recorded sha256
    still matches (a `touch` or a copy does not force a recompute).
    """
    meta = read_latent_metadata(output)
    if not meta or LATENT_FORMAT_KEY not in meta:
        return False
    if any(meta.get(k) != v for k, v in (recipe or {}).items()):
        return False
    st = source.stat()
    if meta.get("source_size") != str(st.st_size):
        return False
    if meta.get("source_mtime_ns") == str(st.st_mtime_ns):
        return True
    return meta.get("source_sha256") is not None and meta["source_sha256"] == file_digest(source)


def _load_tensor(path: Path) -> tuple[torch.Tensor, dict[str, str] | None]:
    suffix = path.suffix.lower()
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: empty file (0 bytes)")
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise InputError(f"{path}: not a readable .npy array ({str(e).splitlines()[0]})") from None
        if not np.issubdtype(arr.dtype, np.floating):
            raise InputError(f"{path}: holds {arr.dtype} values, expected floats")
        return torch.from_numpy(np.ascontiguousarray(arr)), None
    if suffix == ".pt":
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for damaged or non-tensor pickles
            raise InputError(f"{path}: not loadable with weights_only=True ({str(e).splitlines()[0][:200]})") from None
        if not isinstance(obj, torch.Tensor):
            raise InputError(f"{path}: holds a {type(obj).__name__}, expected a single tensor")
        return obj, None
    if suffix != ".safetensors":
        raise InputError(f"{path}: not a latent file (expected {', '.join(LATENT_SUFFIXES)})")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            keys = list(f.keys())
            name = next((k for k in _FOREIGN_NAMES if k in keys), None)
            if name is None and LATENT_FORMAT_KEY not in meta and len(keys) == 1:
                name = keys[0]
            if name is None:
                raise InputError(f"{path}: no tensor named 'latent' (has: {', '.join(keys[:5]) or 'none'})")
            return f.get_tensor(name), meta
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable or truncated safetensors file ({e})") from None


def read_latent(path: str | Path) -> Latent:
    """Read and check a latent: present, 3-D or 4-D, finite. Channel counts are checked by the caller's model."""
    path = Path(path)
    tensor, raw_meta = _load_tensor(path)
    meta = LatentMeta.from_strings(raw_meta, path) if raw_meta and LATENT_FORMAT_KEY in raw_meta else None
    if meta is None and tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]  # a foreign (1, C, h, w) batch of one -> (C, h, w)
    if tensor.ndim not in (3, 4):
        raise InputError(f"{path}: latent has shape {list(tensor.shape)}; expected [C,h,w] or [T,C,h,w]")
    if not torch.is_floating_point(tensor):
        raise InputError(f"{path}: latent has dtype {tensor.dtype}, expected floats")
    if not torch.isfinite(tensor).all():
        raise InputError(f"{path}: latent contains NaN or inf values")
    return Latent(tensor.float(), meta, path)


def check_channels(latent: Latent, channels: int) -> None:
    got = latent.tensor.shape[-3]
    if got != channels:
        raise InputError(f"{latent.path}: latent has {got} channels but the model expects {channels}")
