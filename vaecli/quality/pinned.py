"""Reading the registry's pinned torch-pickle networks (LPIPS, FID Inception) from the cache.

These files are the one exception to "safetensors only": they are the registry's own pinned
downloads, and are read with `torch.load(weights_only=True)`, which runs no code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, DownloadError
from ..weights import registry
from ..weights.integrity import verify_file


def cached_path(name: str, cache_dir: str | Path | None = None) -> Path | None:
    """Where the registry entry's (single) file lies in the cache, or None when it is not fetched."""
    path = registry.cached_file(name, registry.get_entry(name).files[0], cache_dir)
    return path if path.is_file() else None


def check_pin(name: str, path: Path) -> None:
    """Hash a cached file against the registry's pin; a mismatch is a CheckpointError naming the file."""
    try:
        verify_file(registry.get_entry(name).files[0], path)
    except DownloadError as e:
        raise CheckpointError(str(e)) from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A torch pickle holding a state dict, on the CPU; anything else is one line naming the file."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign pickle
        raise CheckpointError(f"{path}: not a readable torch weights file ({type(e).__name__}: {e})") from e
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(sd).__name__}")
    return sd


def load_exactly(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load a state dict whose keys and shapes must be the model's; a mismatch is one line,
    `what` followed by the first keys at fault."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a wrong shape; its "size mismatch for <key>: ..." line names it
        detail = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).strip().splitlines()[0])
        raise CheckpointError(f"{what} ({detail})") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{what} (missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
