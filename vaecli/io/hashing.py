"""File digests, read in 1 MiB blocks so a multi-GB file costs no memory, and a small on-disk cache of them.

A weights file is part of every output's recipe by its sha256; hashing 300 MB on every run would
cost seconds, so `DigestCache` keeps digests keyed on (resolved path, size, mtime_ns): a file
replaced in place (a fine-tune saved over the old weights) gets a new mtime and is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .atomic import atomic_path

HASH_CHUNK = 1 << 20  # local reads


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (`algorithm`: any hashlib name, sha256 by default)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class DigestCache:
    """sha256 of files, remembered in a JSON file (written atomically) while their size and mtime hold."""

    def __init__(self, cache_file: Path | None):
        self.cache_file = cache_file  # None: remember nothing across runs
        self._entries: dict | None = None  # the file's content, read once

    def _load(self) -> dict:
        if self._entries is None:
            try:
                data = json.loads(self.cache_file.read_text(encoding="utf-8")) if self.cache_file is not None else {}
            except (OSError, ValueError):  # absent or damaged: a cache, rebuilt as needed
                data = {}
            self._entries = data if isinstance(data, dict) else {}
        return self._entries

    def sha256(self, path: str | Path) -> str:
        path = Path(path).resolve()
        st = path.stat()
        entries = self._load()
        entry = entries.get(str(path))
        if isinstance(entry, dict) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            return str(entry["sha256"])
        digest = file_digest(path)
        entries[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        if self.cache_file is not None:
            try:
                with atomic_path(self.cache_file) as tmp:
                    tmp.write_text(json.dumps(entries, indent=0, sort_keys=True), encoding="utf-8")
            except OSError:  # a read-only cache folder costs a re-hash next time, nothing more
                pass
        return digest


def fingerprint(path: str | Path) -> dict:
    """A source file's identity for freshness: size and mtime (from one stat taken first), then sha256.

    Taken before the file is read, so a file changed while it was being read gets a newer mtime
    than the one recorded and is redone on the next run.
    """
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_digest(path)}
