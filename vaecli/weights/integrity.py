"""Whether a cached weights file is the one expected: its pinned hash, or the one recorded at download.

No network code here: checking a cache (`fetch-weights --verify`, the LPIPS loader) needs none.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DownloadError
from ..io.atomic import atomic_path
from ..io.hashing import file_digest
from .registry import WeightFile


def recorded_sha256_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def expected_sha256(wf: WeightFile, path: Path) -> str | None:
    """The registry's pin, else the hash recorded beside the file on its first download."""
    if wf.sha256:
        return wf.sha256.lower()
    rec = recorded_sha256_path(path)
    if rec.is_file():
        return rec.read_text(encoding="ascii").split()[0].lower()
    return None


def record_sha256(path: Path, digest: str) -> None:
    with atomic_path(recorded_sha256_path(path)) as tmp:
        tmp.write_text(f"{digest}  {path.name}\n", encoding="ascii")  # the format of `sha256sum -c`


def verify_file(wf: WeightFile, path: Path) -> str:
    """Hash a cached file against its pin or recorded hash; returns its sha256, raises on mismatch."""
    sha = file_digest(path)
    want = expected_sha256(wf, path)
    if wf.md5 and file_digest(path, "md5") != wf.md5.lower():
        raise DownloadError(f"{path}: md5 mismatch (altered or corrupt; expected {wf.md5}); fetch it again with --force")
    if want and sha != want:
        raise DownloadError(f"{path}: sha256 mismatch (altered or corrupt; expected {want}, got {sha}); fetch it again with --force")
    if want is None and not wf.md5:
        record_sha256(path, sha)
    return sha
