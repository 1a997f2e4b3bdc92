"""Reading the registry's pinned torch-pickle networks (LPIPS, FID Inception) from the cache.

These files are the one exception to "safetensors only": they are the registry's own pinned
downloads, and are read with `torch.load(weights_only=True)`, which runs no code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError, DownloadError
from ..weights import registry
from ..weights.download import verify_file


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
