"""Fetching weights into the cache, so that a bad file never lands there and a good one lands once.

A cron job must be as safe as a terminal: a file appears at its final path only after its size
and hash match (transfer.py renames it from `<name>.partial`), two processes never download the
same file twice (an flock on `<name>.lock`), `verify` only checks what is there and never downloads,
a failed fetch leaves no empty folder in the cache, and a token never reaches another host or any
output (hub.py).

The partial file has a stable name (not a unique one) so that a later run can resume it; the lock
makes that name private to one process.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import CheckpointError, DownloadError, OfflineError, RemoteMissingError
from ..io.hashing import file_digest
from .hf_cache import verify_hub_file
from .hub import (
    clean_token,
    display_url,
    hub_token_hosts,
    is_offline,
    redact,
    resolve_token,
    resolve_url,
    url_host,
)
from .integrity import verify_file
from .locate import HF_CACHE, hub_cached_copy, in_hub_cache
from .registry import Entry, WeightFile, cache_dir, cached_file, get_entry
from .repos import CONFIG_NAME, RepoRef, weights_names
from .transfer import CHUNK_SIZE, RetryPolicy, TransferJob, transfer_file


@dataclass(frozen=True)
class FetchResult:
    path: Path
    # "downloaded", "cached" (present, size checked), "verified" (present, hash checked) or
    # "hf-cache" (found in the Hugging Face cache and checked: used in place, nothing downloaded)
    status: str
    sha256: str | None = None  # known when downloaded or verified
    note: str | None = None  # something the user should hear about, e.g. a corrupt Hugging Face cache copy


def md5_hash(path: str | Path) -> str:
    """The seed's checksum helper: the md5 of a file, in hex."""
    return file_digest(path, "md5")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive flock on `path`; yields True when another process held it first.

    The lock file is deleted on release. A waiter may then hold a lock on a deleted inode, so after
    locking it checks that the path still names its inode, and starts over when not.
    """
    waited = False
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # a failed fetch in another process removed the empty folder just now
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield waited
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


@contextlib.contextmanager
def _folder_for(dest: Path) -> Iterator[None]:
    """Make `dest`'s folder; if what follows fails, remove again the folders made here that stayed empty."""
    made = list(itertools.takewhile(lambda p: not p.exists(), (dest.parent, *dest.parent.parents)))  # deepest first
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # not empty: a partial file kept for resume, or another process's lock
                break
        raise


def fetch_file(
    wf: WeightFile,
    dest: str | Path,
    *,
    urls: tuple[str, ...] | None = None,
    token: str | None = None,
    token_hosts: Collection[str] | None = None,
    label: str | None = None,
    gated: bool = False,
    force: bool = False,
    verify: bool = False,
    quiet: bool = True,
    policy: RetryPolicy | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> FetchResult:
    """Make `dest` hold the file `wf` describes, downloading it unless it is already there.

    `urls` default to `wf.urls` with the Hugging Face mirror applied. The token goes only to
    `token_hosts` (default: huggingface.co and the mirror); requests drops it on a redirect to
    another host. A file already present is size-checked, and hashed with `verify`, or when this
    process had to wait for another one that was downloading it; `verify` never downloads.
    """
    given_token, token = token, clean_token(token)
    dest = Path(dest)
    label = label or wf.filename
    urls = urls if urls is not None else tuple(resolve_url(u) for u in wf.urls)
    hosts = {h.lower() for h in (token_hosts if token_hosts is not None else hub_token_hosts())}
    policy = policy or RetryPolicy()

    def headers_for(url: str) -> dict[str, str]:
        headers = {"User-Agent": f"vaecli/{__version__}", "Accept-Encoding": "identity"}  # byte ranges of the file itself
        if token and url_host(url) in hosts:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    try:
        if verify and not force and not dest.is_file():
            raise DownloadError(f"{dest}: not downloaded, so there is nothing to verify; fetch it without --verify first")
        with _folder_for(dest), file_lock(dest.with_name(dest.name + ".lock")) as waited:
            partial = dest.with_name(dest.name + ".partial")
            if dest.is_file() and not force:
                if verify or waited:
                    return FetchResult(dest, "verified", verify_file(wf, dest))
                if wf.size is not None and dest.stat().st_size != wf.size:
                    raise DownloadError(f"{dest}: {dest.stat().st_size} bytes, expected {wf.size} (altered?); fetch it again with --force")
                return FetchResult(dest, "cached")
            if is_offline():
                where = display_url(urls[0]) if urls else label
                raise OfflineError(f"{where}: not cached, and offline mode is on (VAECLI_OFFLINE / HF_HUB_OFFLINE)")
            if force:
                partial.unlink(missing_ok=True)
            show = not quiet and sys.stderr.isatty()
            job = TransferJob(wf, partial, policy, chunk_size, label, gated)
            sha = transfer_file(job, urls, dest, headers_for, show)
            return FetchResult(dest, "downloaded", sha)
    except DownloadError as e:
        raise type(e)(redact(str(e), [given_token])) from None


def fetch_entry(
    entry: Entry,
    *,
    root: str | Path | None = None,
    token: str | None = None,
    token_hosts: Collection[str] | None = None,
    force: bool = False,
    verify: bool = False,
    quiet: bool = True,
    policy: RetryPolicy | None = None,
) -> list[FetchResult]:
    """Fetch every file of a registry (or custom) entry into the cache; HF_TOKEN is the default token.

    A file vaecli's cache lacks but the Hugging Face cache holds is checked against its pin and used
    where it is (status "hf-cache"); a copy there that fails the check is left alone and downloaded anew
    (with `verify`, that check is the verification: its failure is the error).
    """
    token = resolve_token(token)
    results = []
    for wf in entry.files:
        dest = cached_file(entry.name, wf, root)
        refused = None
        if not force and not dest.is_file() and (hub := hub_cached_copy(wf)) is not None:
            try:
                results.append(FetchResult(hub.path, HF_CACHE, verify_hub_file(hub, wf.sha256)))
                continue
            except CheckpointError as e:
                refused = _hub_copy_refused(e, verify)
        common = dict(token=token, token_hosts=token_hosts, label=entry.name, gated=entry.gated, quiet=quiet, policy=policy)
        with _because(refused):
            result = fetch_file(wf, dest, force=force, verify=verify, **common)
        results.append(FetchResult(result.path, result.status, result.sha256, refused and f"{refused}; downloading a verified copy into vaecli's cache instead"))
    return results


def _hub_copy_refused(error: CheckpointError, verify: bool) -> str:
    """Why the Hugging Face cache's copy is not used; with `verify` that is the answer (DownloadError), nothing is downloaded."""
    if verify:
        raise DownloadError(str(error)) from None
    return str(error)


@contextlib.contextmanager
def _because(refused: str | None) -> Iterator[None]:
    """A download that failed (offline, say) after the Hugging Face cache's copy was refused says why it was tried."""
    try:
        yield
    except DownloadError as e:
        if refused is None:
            raise
        raise type(e)(f"{e}; a download was needed because the Hugging Face cache's copy was refused: {refused}") from None


def fetch_repo(ref: RepoRef, *, root: str | Path | None = None, force: bool = False, **options) -> list[FetchResult]:
    """Fetch a diffusers folder of a Hugging Face repository: its config.json, then its weights.

    The weights are the full-precision `diffusion_pytorch_model.safetensors` when the repository has
    it, else its fp16 (then bf16) variant: each name is tried with the resolve/main URL, a 404 moving
    on to the next. No hash is published for such files: the first download records its sha256 beside
    it, and `verify` checks against that. A folder already in the Hugging Face cache is used there.
    `options` (token, token_hosts, verify, quiet, policy) are fetch_entry's.
    """
    options["token"] = resolve_token(options.get("token"))
    folder = ref.cache_folder(Path(root).expanduser() if root is not None else cache_dir())
    refused = None
    if not force and not (folder / CONFIG_NAME).is_file():
        try:
            found = in_hub_cache(ref)
            if found.found:
                return [FetchResult(found.config_file, HF_CACHE), FetchResult(found.weights, HF_CACHE, found.sha256)]
        except CheckpointError as e:
            refused = _hub_copy_refused(e, options.get("verify", False))
    note = refused and f"{refused}; downloading a copy into vaecli's cache instead"

    def fetch(name: str) -> FetchResult:
        return fetch_file(WeightFile(filename=name, urls=(ref.url(name),)), folder / name, label=str(ref), force=force, **options)

    names = [n for n in weights_names() if n.endswith(".safetensors")]
    here = [n for n in names if (folder / n).is_file() and not force]
    with _because(refused):
        results = [fetch(CONFIG_NAME)]
        for name in here[:1] or names:
            try:
                results.append(fetch(name))
                break
            except RemoteMissingError:
                continue
        else:
            raise RemoteMissingError(f"{ref}: the repository has none of {', '.join(names)} (pickled .bin weights are not fetched)")
    return [FetchResult(r.path, r.status, r.sha256, note) for r in results]


def download(url: str, local_path: str | Path, chunk_size: int = 1024) -> None:
    """The seed's helper: download `url` to `local_path` (always anew), with every safeguard above."""
    path = Path(local_path)
    wf = WeightFile(filename=path.name, urls=(url,))
    fetch_file(wf, path, token=resolve_token(), force=True, quiet=False, chunk_size=chunk_size)


def get_ckpt_path(name: str, root: str | Path, check: bool = False) -> str:
    """The seed's helper: the path of registry file `name` directly in `root`, downloaded when
    missing, or when `check` is set and its checksum does not match."""
    entry = get_entry(name)
    wf = entry.files[0]
    path = Path(root) / wf.filename
    stale = False
    if path.is_file() and check:
        try:
            verify_file(wf, path)
        except DownloadError:
            stale = True
    if not path.is_file() or stale:
        fetch_file(wf, path, label=name, gated=entry.gated, force=True, quiet=False)
    return str(path)
