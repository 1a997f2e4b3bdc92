"""The Hugging Face hub cache, read only: files diffusers and huggingface_hub already downloaded.

Layout (huggingface_hub's): `<hub>/models--ORG--REPO/refs/<revision>` holds a commit hash, and
`snapshots/<commit>/<path in repo>` is a symbolic link to `../../blobs/<etag>`. The etag of a file
stored with Git LFS (every weights file) is its sha256; that of a small git file (config.json) is its
git blob sha1. So a cached file can be checked against its own name even where no hash is pinned.
vaecli never writes into this cache: a file that fails its check is refused, and the message says so.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import CheckpointError
from ..io.hashing import HASH_CHUNK, file_digest
from .hub import HF_HOST

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_GIT_FILE = 10 << 20  # git (non-LFS) files are small; a bigger "config.json" is not one


def hub_cache_dir() -> Path:
    """HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")  # the second: older name
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


@dataclass(frozen=True)
class HubFile:
    """One file of a repository as the hub cache holds it."""

    repo_id: str
    path_in_repo: str
    commit: str
    path: Path  # under snapshots/<commit>/; usually a link to the blob
    etag: str | None  # the blob's name (sha256 for LFS files, git sha1 otherwise); None when not a link


def parse_hub_url(url: str) -> tuple[str, str, str] | None:
    """(repo id, revision, path in repo) of a https://huggingface.co/ORG/REPO/resolve/REV/PATH URL, else None."""
    parts = urlsplit(url)
    if parts.hostname != HF_HOST:
        return None
    m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", unquote(parts.path))
    return (m.group(1), m.group(2), m.group(3)) if m else None


def _repo_dir(root: Path, repo_id: str) -> Path:
    return root / ("models--" + repo_id.replace("/", "--"))


def _commit(repo_dir: Path, revision: str) -> str | None:
    if _HEX40.fullmatch(revision):
        return revision
    ref = repo_dir / "refs" / revision
    try:
        commit = ref.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return commit if _HEX40.fullmatch(commit) else None


def find_file(repo_id: str, path_in_repo: str, revision: str = "main", root: Path | None = None) -> HubFile | None:
    """The cached file of `revision` (a branch through refs/, or a commit hash), None when not cached.

    Only the snapshot `refs/<revision>` names counts, as for huggingface_hub offline: a file kept
    from an older snapshot may be stale.
    """
    repo_dir = _repo_dir(root if root is not None else hub_cache_dir(), repo_id)
    commit = _commit(repo_dir, revision)
    if commit is None:
        return None
    snapshot = repo_dir / "snapshots" / commit
    path = snapshot / path_in_repo
    if not path.is_file() and not path.is_symlink():  # a broken link is an entry, refused by verify_hub_file
        return None
    etag = os.readlink(path).rsplit("/", 1)[-1] if path.is_symlink() else None
    return HubFile(repo_id, path_in_repo, commit, path, etag)


def _git_blob_sha1(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_hub_file(f: HubFile, pinned_sha256: str | None = None, sha256_of: Callable[[Path], str] = file_digest) -> str | None:
    """Check a cached file: against `pinned_sha256` when given, else against its blob's name
    (`sha256_of`: how to hash it, e.g. a DigestCache's remembered digests).

    Returns its sha256 when that was checked, None when nothing could be (a git file's sha1 checked,
    or a copy that is no link); raises CheckpointError for a file that does not match or is a broken link.
    """
    where = f"{f.path} (Hugging Face cache of {f.repo_id})"
    if not f.path.exists():
        raise CheckpointError(
            f"{where}: a broken link (its blob {os.readlink(f.path)} is missing), so it is not used; vaecli never writes "
            f"into that cache: re-download it with huggingface_hub (`hf download {f.repo_id}`, `huggingface-cli download` before huggingface_hub 0.34) or remove the entry, "
            "or run vaecli fetch-weights for this model to keep a verified copy in vaecli's cache, which is looked at first"
        )
    want = pinned_sha256.lower() if pinned_sha256 else (f.etag if f.etag and _HEX64.fullmatch(f.etag) else None)
    if want is not None:
        got = sha256_of(f.path)
        if got != want:
            why = "pinned for it" if pinned_sha256 else "its blob's name"
            raise CheckpointError(
                f"{where}: sha256 {got}, expected {want} ({why}): the cached file is corrupt or altered, so it is not used; "
                "delete it from the Hugging Face cache, or fetch a verified copy with vaecli fetch-weights"
            )
        return got
    if f.etag and _HEX40.fullmatch(f.etag) and f.path.stat().st_size <= MAX_GIT_FILE and _git_blob_sha1(f.path) != f.etag:
        raise CheckpointError(f"{where}: its content does not match its git hash {f.etag}: the cached file is corrupt or altered, so it is not used")
    return None
