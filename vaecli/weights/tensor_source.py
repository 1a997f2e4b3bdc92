"""A checkpoint's VAE tensors by name, read lazily: names and shapes at once, each tensor when asked for.

A full single-file checkpoint (SD, SDXL, SD3, FLUX from a ComfyUI or A1111 model folder) holds the VAE
under a prefix (`first_stage_model.`, `vae.`) beside gigabytes of other weights. Only the tensors under
that prefix are named here, and a safetensors file is memory-mapped, so only their pages are ever read:
loading costs the VAE's size in memory, not the file's. Names are mapped to the model's own (ldm)
names whatever the file's layout.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import CheckpointError
from .formats import ZIP_SIGNATURE, SafetensorsHeader, pickle_refused
from .keymap import diffusers_to_ldm_key, is_diffusers_layout, ldm_key

VAE_PREFIXES = ("first_stage_model.", "vae.")  # SD/SDXL/SD3 single files; FLUX single files
DROP_PREFIXES = ("loss.", "model_ema.")  # training-time parts of LDM first-stage checkpoints
DROP_KEYS = ("bn.num_batches_tracked",)  # FLUX.2's BatchNorm step counter: no part of the computation
BARE_VAE_KEYS = ("encoder.", "decoder.")  # a VAE-only file's tensors, either layout


@dataclass(frozen=True)
class TensorSource:
    """The VAE inside one checkpoint: model name -> file name, and each tensor's shape and data on demand."""

    names: dict[str, str]  # ldm name -> name in the file
    shape: Callable[[str], tuple]  # file name -> shape
    get: Callable[[str], torch.Tensor]  # file name -> tensor
    prefix: str | None = None  # the VAE's prefix inside a full checkpoint, None for a VAE-only file


def vae_prefix(file_keys: Iterable[str], source: Path | str = "weights file") -> str | None:
    """The prefix the VAE's tensors sit under in a full checkpoint, None when the file holds a VAE alone.

    A file with VAE tensors in two places (under both prefixes, or under one and at the top level) holds
    two VAEs: which one is meant cannot be told, so it is refused (CheckpointError) rather than guessed.
    """
    keys = list(file_keys)
    places = [p for p in VAE_PREFIXES if any(k.startswith(p) for k in keys)]
    if any(k.startswith(BARE_VAE_KEYS) for k in keys):
        places.append("")
    if len(places) > 1:
        named = " and ".join(f"under {p}" if p else "at the top level (no prefix)" for p in places)
        raise CheckpointError(
            f"{source}: holds two VAEs, {named}; vaecli will not guess which one is meant: save the tensors of the one "
            "you want, without their prefix, to a file of their own and pass that with --weights"
        )
    return places[0] if places and places[0] else None  # "": the top level


def _levels(keys: Iterable[str]) -> int:
    """Resolution levels, counted on the encoder's down path (else the decoder's up path), either layout."""
    found = {int(m.group(2)) for k in keys if (m := re.match(r"encoder\.(down|down_blocks)\.(\d+)\.", k))}
    if not found:
        found = {int(m.group(2)) for k in keys if (m := re.match(r"decoder\.(up|up_blocks)\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def model_names(file_keys: Iterable[str], source: Path | str = "weights file") -> tuple[str | None, dict[str, str]]:
    """(prefix, {ldm name: file name}) for the VAE's tensors; other models' tensors are left out."""
    keys = list(file_keys)
    prefix = vae_prefix(keys, source)
    cleaned = {}
    for k in keys:
        if prefix is not None and not k.startswith(prefix):
            continue
        name = k[len(prefix) :] if prefix else k
        if not name.startswith(DROP_PREFIXES) and name not in DROP_KEYS:
            cleaned[name] = k
    if is_diffusers_layout(cleaned):
        levels = _levels(cleaned)
        cleaned = {diffusers_to_ldm_key(c, levels): k for c, k in cleaned.items()}
    return prefix, {ldm_key(c): k for c, k in cleaned.items()}


def _torch_load(path: Path):
    """torch.load with weights_only=True, memory-mapped where torch can: a zip container (not the
    legacy format) under a name torch does not hand to safetensors instead (`*.safetensors`)."""
    with open(path, "rb") as f:
        if f.read(len(ZIP_SIGNATURE)) == ZIP_SIGNATURE and path.suffix.lower() != ".safetensors":
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        f.seek(0)
        return torch.load(f, map_location="cpu", weights_only=True)


def _pickle_source(path: Path, allow_pickle: bool) -> TensorSource:
    if not allow_pickle:
        raise pickle_refused(path)
    try:
        obj = _torch_load(path)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot load pickle checkpoint with weights_only=True ({str(e).splitlines()[0]})") from None
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: pickle file holds no state dict of tensors")
    prefix, names = model_names(sd, path)
    return TensorSource(names, lambda k: tuple(sd[k].shape), lambda k: sd[k], prefix)


def _safetensors_source(path: Path, header: SafetensorsHeader, device: torch.device, stack: contextlib.ExitStack) -> TensorSource:
    try:
        f = stack.enter_context(safe_open(str(path), framework="pt", device=str(device) if device.type == "cuda" else "cpu"))
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from None

    def get(k: str) -> torch.Tensor:
        try:
            return f.get_tensor(k)
        except Exception as e:
            raise CheckpointError(f"{path}: tensor {k} is unreadable ({e}); the file may be truncated") from None

    prefix, names = model_names(header.shapes, path)
    return TensorSource(names, header.shapes.__getitem__, get, prefix)


def open_source(
    path: Path, header: SafetensorsHeader | None, allow_pickle: bool, stack: contextlib.ExitStack, device: torch.device = torch.device("cpu")
) -> TensorSource:
    """The VAE tensors of `path` (`header`: its safetensors header, None for a pickle); files close with `stack`.

    safetensors files are memory-mapped: a tensor's pages are read when first used, so the rest of a
    full checkpoint is never read. On CUDA each tensor goes straight to the device.
    """
    if header is None:
        return _pickle_source(path, allow_pickle)
    return _safetensors_source(path, header, device, stack)
