"""A Hugging Face hub cache laid out on disk as huggingface_hub lays it out, for tests (never the network).

`models--ORG--REPO/blobs/<etag>` holds each file, named by its sha256 for Git LFS files (weights) and
by its git blob sha1 for others (config.json); `snapshots/<commit>/<path>` links to the blob and
`refs/<revision>` names the commit. test_hf_cache checks that huggingface_hub itself reads this layout.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors", ".bin")


def etag_of(path_in_repo: str, data: bytes) -> str:
    if path_in_repo.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_to_hub_cache(
    root: Path, repo_id: str, files: dict[str, bytes], *, commit: str = COMMIT, revision: str | None = "main", etags: dict[str, str] | None = None
) -> dict[str, Path]:
    """Put `files` ({path in repo: bytes}) into the cache at `root`; returns each snapshot path.

    `etags` overrides a blob's name (a blob whose bytes no longer match its name: a corrupt file).
    `revision=None` writes no ref, as a snapshot of an older commit stays behind after an update.
    """
    repo = root / ("models--" + repo_id.replace("/", "--"))
    links = {}
    for path_in_repo, data in files.items():
        etag = (etags or {}).get(path_in_repo) or etag_of(path_in_repo, data)
        blob = repo / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / path_in_repo
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
        links[path_in_repo] = link
    if revision is not None:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / revision).write_text(commit)
    return links


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry under `root` with its kind, size and modification time: equal before and after = untouched."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            state[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return state
