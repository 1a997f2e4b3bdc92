"""File digests, read in 1 MiB blocks so a multi-GB file costs no memory."""

from __future__ import annotations

import hashlib
from pathlib import Path

HASH_CHUNK = 1 << 20  # local reads


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (`algorithm`: any hashlib name, sha256 by default)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()
