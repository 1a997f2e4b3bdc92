"""Latent files: safetensors with tensor `latent` and string metadata that make them self-describing.

A latent file written here carries everything decode needs (model name, full config, the weights it
came from, scaling convention, original size and padding), and its provenance document (see
vaecli.io.provenance: the recipe that made it, for resume). Reading also accepts foreign latents (.npy,
.pt holding one tensor, other .safetensors files) whose model and scaling the user states with flags.
Latents are shared between people and machines: every metadata field is checked on read, and every
problem raises InputError naming the file (and the field), so one bad latent fails alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from ..errors import InputError
from .atomic import atomic_path
from .provenance import PROVENANCE_KEY, provenance_text

LATENT_FORMAT_KEY = "vaecli_latent_format"
LATENT_FORMAT_VERSION = "1"
LATENT_SUFFIXES = (".safetensors", ".npy", ".pt")
_FOREIGN_NAMES = ("latent", "latents")
LAYOUTS = ("spatial", "patchified")  # see vaecli.batch.latent_space


def metadata_string(value) -> str:
    """How a metadata value is stored: booleans as JSON (true/false), everything else as str()."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


# Frame rates a video latent may record: what ffmpeg's mp4 writer takes (it fails below about 1/1000 and
# past 1e12), bounded to what cameras record, so a bad value is refused by name before ffmpeg starts.
FPS_RANGE = (0.01, 1000.0)
_MAX_SIDE = 1 << 20  # pixels: far beyond any image a VAE decodes, small enough to refuse nonsense


def _field_error(path: Path, key: str, raw: str, why: str) -> InputError:
    shown = raw if len(raw) <= 60 else raw[:57] + "..."
    return InputError(f"{path}: latent metadata field {key}={shown!r}: {why}")


class _Fields:
    """Typed, checked access to a latent's string metadata: each bad field is one error naming it."""

    def __init__(self, meta: dict[str, str], path: Path):
        self.meta, self.path = meta, path

    def raw(self, key: str) -> str | None:
        value = self.meta.get(key)
        return None if value in (None, "", "None") else value

    def text(self, key: str, default: str = "") -> str:
        return self.meta.get(key, default)

    def number(self, key: str, *, positive: bool = False, low: float | None = None, high: float | None = None,
               default: float | None = None) -> float | None:
        raw = self.raw(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise _field_error(self.path, key, raw, "not a number") from None
        if not math.isfinite(value) or (positive and value <= 0):
            raise _field_error(self.path, key, raw, "expected a positive finite number" if positive else "expected a finite number")
        if (low is not None and value < low) or (high is not None and value > high):
            raise _field_error(self.path, key, raw, f"expected {low:g} to {high:g}")
        return value

    def integer(self, key: str, *, low: int | None = None, high: int | None = None, default: int | None = None) -> int | None:
        raw = self.raw(key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise _field_error(self.path, key, raw, "not an integer") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise _field_error(self.path, key, raw, f"expected an integer in [{low}, {high}]")
        return value

    def side(self, key: str, default: int | None = None) -> int:
        value = self.integer(key, low=1, high=_MAX_SIDE, default=default)
        if value is None:
            raise InputError(f"{self.path}: latent metadata lacks the field {key}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.meta.get(key, default)
        if value not in choices:
            raise _field_error(self.path, key, value, f"expected one of {', '.join(choices)}")
        return value

    def json_object(self, key: str) -> str:
        raw = self.meta.get(key)
        if raw is None:
            raise InputError(f"{self.path}: latent metadata lacks the field {key}")
        try:
            ok = isinstance(json.loads(raw), dict)
        except ValueError:
            ok = False
        if not ok:
            raise _field_error(self.path, key, raw, "not a JSON object")
        return raw


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
    seed: int | None = None  # --seed as given, with --sample
    sample_seed: int | None = None  # the seed of this file's draw, derived from `seed` and its relative path
    weights: str | None = None  # absolute path of the weights file, when not a registry model
    source: str = ""  # absolute path of the encoded file
    fps: float | None = None  # video only
    frames: int | None = None  # video only
    vaecli_version: str = ""
    layout: str | None = None  # None or "spatial": raw z's layout; "patchified": FLUX.2's BatchNorm-normalised patches
    normalizer: str | None = None  # a normaliser file's bytes, base64 (vaecli.stats.normalizer_file): stored = normaliser(latents)
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
        """Parse and check every field; a latent from elsewhere is untrusted input (one-line error per bad field)."""
        known = set(cls.__dataclass_fields__) - {"extra"}
        f = _Fields(meta, path)
        height, width = f.side("height"), f.side("width")
        return cls(
            model=f.raw("model"),
            config=f.json_object("config"),
            scaling_factor=f.number("scaling_factor", positive=True),
            shift_factor=f.number("shift_factor", default=0.0),
            scaled=f.choice("scaled", ("true", "false"), "true") == "true",
            height=height,
            width=width,
            original_height=f.side("original_height", height),
            original_width=f.side("original_width", width),
            size_handling=f.text("size_handling"),
            preprocess=f.text("preprocess"),
            posterior=f.choice("posterior", ("mode", "sample"), "mode"),
            seed=f.integer("seed"),
            sample_seed=f.integer("sample_seed", low=0),
            weights=f.raw("weights"),
            source=f.text("source"),
            fps=f.number("fps", positive=True, low=FPS_RANGE[0], high=FPS_RANGE[1]),
            frames=f.integer("frames", low=1),
            vaecli_version=f.text("vaecli_version"),
            layout=None if f.raw("layout") is None else f.choice("layout", LAYOUTS, "spatial"),
            normalizer=f.raw("normalizer"),
            extra={k: v for k, v in meta.items() if k not in known and k not in (LATENT_FORMAT_KEY, PROVENANCE_KEY)},
        )


@dataclass
class Latent:
    """A latent read from disk: (C, h, w) for an image or (T, C, h, w) for a video."""

    tensor: torch.Tensor
    meta: LatentMeta | None  # None for a foreign latent
    path: Path

    @property
    def is_video(self) -> bool:
        return self.tensor.ndim == 4


@dataclass(frozen=True)
class LatentHeader:
    """What planning needs from a latent without reading its values: shape and metadata."""

    shape: tuple[int, ...]  # (C, h, w) or (T, C, h, w), as read_latent will return it
    meta: LatentMeta | None

    @property
    def is_video(self) -> bool:
        return len(self.shape) == 4


def write_latent(path: str | Path, latent: torch.Tensor, meta: LatentMeta, *, mean=None, logvar=None,
                 provenance: dict | None = None, before_replace=None) -> None:
    """Write tensor `latent` (and `mean`/`logvar` with --save-dist) atomically, with its provenance document."""
    # clone: with --no-scale the latent *is* the mean, and safetensors refuses tensors sharing memory
    tensors = {"latent": latent.detach().cpu().clone()}
    if mean is not None:
        tensors["mean"] = mean.detach().cpu().clone()
        tensors["logvar"] = logvar.detach().cpu().clone()
    strings = meta.to_strings()
    if provenance is not None:
        strings[PROVENANCE_KEY] = provenance_text(provenance)
    data = save(tensors, metadata=strings)  # bytes, written by us: safetensors' own file writer creates 0600 files
    with atomic_path(path, before_replace) as tmp:
        tmp.write_bytes(data)


def _tensor_name(path: Path, keys: list[str], meta: dict[str, str]) -> str:
    name = next((k for k in _FOREIGN_NAMES if k in keys), None)
    if name is None and LATENT_FORMAT_KEY not in meta and len(keys) == 1:
        name = keys[0]
    if name is None:
        raise InputError(f"{path}: no tensor named 'latent' (has: {', '.join(keys[:5]) or 'none'})")
    return name


def _check_size(path: Path) -> None:
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: empty file (0 bytes)")
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None


def _normalised(path: Path, shape: tuple[int, ...], meta: LatentMeta | None) -> tuple[int, ...]:
    if meta is None and len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]  # a foreign (1, C, h, w) batch of one -> (C, h, w)
    if len(shape) not in (3, 4):
        raise InputError(f"{path}: latent has shape {list(shape)}; expected [C,h,w] or [T,C,h,w]")
    if min(shape) <= 0:  # an empty side: nothing to decode, and planning's cost would divide by it
        raise InputError(f"{path}: latent has shape {list(shape)}; every dimension must be at least 1")
    return shape


def peek_latent(path: str | Path) -> LatentHeader:
    """Shape and checked metadata of a latent file, reading only its header (safetensors, .npy) or mapping it (.pt)."""
    path = Path(path)
    _check_size(path)
    suffix = path.suffix.lower()
    raw_meta: dict[str, str] = {}
    if suffix == ".npy":
        try:
            shape = tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
        except (ValueError, OSError, EOFError) as e:
            raise InputError(f"{path}: not a readable .npy array ({str(e).splitlines()[0]})") from None
    elif suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                raw_meta = dict(f.metadata() or {})
                shape = tuple(f.get_slice(_tensor_name(path, list(f.keys()), raw_meta)).get_shape())
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"{path}: unreadable or truncated safetensors file ({e})") from None
    else:
        shape = tuple(_load_tensor(path)[0].shape)  # .pt: small, and only loadable whole
    meta = LatentMeta.from_strings(raw_meta, path) if LATENT_FORMAT_KEY in raw_meta else None
    return LatentHeader(_normalised(path, shape, meta), meta)


def _load_tensor(path: Path) -> tuple[torch.Tensor, dict[str, str] | None]:
    suffix = path.suffix.lower()
    _check_size(path)
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
            return f.get_tensor(_tensor_name(path, list(f.keys()), meta)), meta
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable or truncated safetensors file ({e})") from None


def read_latent(path: str | Path) -> Latent:
    """Read and check a latent: present, 3-D or 4-D, finite. Channel counts are checked by the caller's model."""
    path = Path(path)
    tensor, raw_meta = _load_tensor(path)
    meta = LatentMeta.from_strings(raw_meta, path) if raw_meta and LATENT_FORMAT_KEY in raw_meta else None
    tensor = tensor.reshape(_normalised(path, tuple(tensor.shape), meta))
    if not torch.is_floating_point(tensor):
        raise InputError(f"{path}: latent has dtype {tensor.dtype}, expected floats")
    if not torch.isfinite(tensor).all():
        raise InputError(f"{path}: latent contains NaN or inf values")
    return Latent(tensor.float(), meta, path)


def check_channels(latent: Latent, channels: int) -> None:
    got = latent.tensor.shape[-3]
    if got != channels:
        raise InputError(f"{latent.path}: latent has {got} channels but the model expects {channels}")


def _shaping(meta: LatentMeta) -> tuple[bool, bool] | None:
    """(resized, center-cropped) as the latent's `preprocess` records them; None when it records nothing readable."""
    try:
        pre = json.loads(meta.preprocess)
    except ValueError:
        return None
    if not isinstance(pre, dict) or "resize" not in pre:
        return None
    return pre["resize"] is not None, bool(pre.get("center_crop"))


def check_geometry(path: Path, shape: tuple[int, ...], meta: LatentMeta | None, factor: int) -> None:
    """A vaecli latent's recorded sizes must be what its latent holds (no silent crops, no impossible metadata).

    The content size (height, width) is what the padded latent decodes to: encode pads only the bottom and
    right, by less than `factor`, so ceil(size / factor) is the latent's side. The source's size
    (original_height, original_width) equals the content size unless the latent records --resize (any
    size) or --center-crop alone (which crops less than `factor` pixels from each side's length).
    """
    if meta is None:
        return
    h, w = shape[-2:]
    for key, size, side in (("height", meta.height, h), ("width", meta.width, w)):
        if -(-size // factor) != side:
            raise InputError(f"{path}: latent metadata field {key}={size} does not fit a latent of side {side} (factor {factor})")
    shaping = _shaping(meta)
    if shaping is None or shaping[0]:
        return
    cropped = shaping[1]
    for key, original, size in (("original_height", meta.original_height, meta.height), ("original_width", meta.original_width, meta.width)):
        if not (0 <= original - size < factor if cropped else original == size):
            rule = (f"with --center-crop the source is at most {factor - 1} pixels larger" if cropped
                    else "without --resize or --center-crop they are equal")
            raise InputError(f"{path}: latent metadata field {key}={original} does not fit the content size {size} that its latent "
                             f"of side {h if key == 'original_height' else w} holds ({rule})")
