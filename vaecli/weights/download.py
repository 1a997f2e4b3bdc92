"""Downloading pretrained weights so that a bad file never lands in the cache.

A cron job must be as safe as a terminal: a file appears at its final path only after its size
and hash match (renamed from `<name>.partial`), an HTML error page or a truncated body is never
accepted, a dropped connection resumes with a Range request, two processes never download the
same file twice (an flock on `<name>.lock`), and a token never reaches another host or any output.

The partial file has a stable name (not a unique one) so that a later run can resume it; the lock
makes that name private to one process. It is kept only after a failure that a resume can fix
(connection dropped, timeouts, 5xx); any failure of the file itself (hash, size, HTML, 4xx)
deletes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import sys
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

from .. import __version__
from ..errors import DownloadError, OfflineError
from ..io.atomic import atomic_path
from ..io.hashing import HASH_CHUNK, file_digest
from .registry import Entry, WeightFile, cached_file, get_entry

HF_URL = "https://huggingface.co"
HF_HOST = "huggingface.co"
CHUNK_SIZE = 64 << 10  # network reads: a dropped connection loses at most the chunk in flight
DISK_MARGIN = 64 << 20  # keep this much free beyond the file: a full disk breaks more than the download
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: transient failures (connection, timeout, 5xx, 429) back off exponentially."""

    retries: int = 4  # attempts after the first
    base_delay: float = field(default_factory=lambda: float(os.environ.get("VAECLI_RETRY_DELAY", "1.0")))
    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # seconds without a byte, not for the whole file


@dataclass(frozen=True)
class FetchResult:
    path: Path
    status: str  # "downloaded", "cached" (present, size checked) or "verified" (present, hash checked)
    sha256: str | None = None  # known when downloaded or verified


class _Transient(Exception):
    """A failure a later attempt can fix; the partial file is kept for resume."""


def is_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("VAECLI_OFFLINE", "HF_HUB_OFFLINE"))


def hub_endpoint() -> str:
    """The Hugging Face endpoint: VAECLI_ENDPOINT, else HF_ENDPOINT, else huggingface.co."""
    return (os.environ.get("VAECLI_ENDPOINT") or os.environ.get("HF_ENDPOINT") or HF_URL).rstrip("/")


def resolve_url(url: str) -> str:
    """Point https://huggingface.co URLs at the configured mirror; other URLs are left alone."""
    if url == HF_URL or url.startswith(HF_URL + "/"):
        return hub_endpoint() + url[len(HF_URL) :]
    return url


def hub_token_hosts() -> frozenset[str]:
    """Hosts a Hugging Face token may be sent to: huggingface.co and the configured mirror."""
    return frozenset({HF_HOST, (urlsplit(hub_endpoint()).hostname or HF_HOST).lower()})


def url_host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def redact(text: str, token: str | None) -> str:
    """Replace every occurrence of the token in a message (the last guard before any output)."""
    if token:
        text = text.replace(token, "***")
    return text


def _display_url(url: str) -> str:
    """A URL fit for messages: any user:password part dropped."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts)


def md5_hash(path: str | Path) -> str:
    """The seed's checksum helper: the md5 of a file, in hex."""
    return file_digest(path, "md5")


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


def _record_sha256(path: Path, digest: str) -> None:
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
        _record_sha256(path, sha)
    return sha


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive flock on `path`; yields True when another process held it first.

    The lock file is deleted on release. A waiter may then hold a lock on a deleted inode, so after
    locking it checks that the path still names its inode, and starts over when not.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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


def _progress(enabled: bool, label: str):
    """A rich progress bar (bytes, speed, ETA) on stderr, or a no-op context when disabled."""
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip()[:15].lower()
    return start.startswith(b"<!doctype") or start.startswith(b"<html")


def _status_error(r: requests.Response, url: str, label: str, gated: bool, sent_token: bool) -> Exception:
    code = r.status_code
    where = f"{_display_url(url)}: HTTP {code} {r.reason or ''}".rstrip()
    if code in (401, 403):
        if gated and not sent_token:
            return DownloadError(f"{where}: {label} is gated: accept its licence on the model page, then pass a token (--token or HF_TOKEN)")
        if sent_token:
            return DownloadError(f"{where}: the token was refused or has no access to {label}")
        return DownloadError(f"{where}: access denied; if it needs a token, pass --token or set HF_TOKEN")
    if code == 404:
        return DownloadError(f"{where}: not found")
    if code in (408, 429) or code >= 500:
        return _Transient(where)
    return DownloadError(where)


def _check_space(folder: Path, needed: int, url: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed + DISK_MARGIN > free:
        raise DownloadError(f"{_display_url(url)}: not enough disk space in {folder}: need {needed} bytes, {free} free")


@dataclass(frozen=True)
class _Job:
    """What one file's download needs besides the URL."""

    wf: WeightFile
    partial: Path  # `<name>.partial` beside the destination, private to the lock holder
    policy: RetryPolicy
    chunk_size: int
    label: str  # the model name, for messages
    gated: bool


def _attempt(job: _Job, session: requests.Session, url: str, headers: dict[str, str], bar) -> tuple[str, str | None]:
    """One GET into the partial file, resuming from its size; returns (sha256, md5) of the whole file."""
    wf, partial, policy = job.wf, job.partial, job.policy
    offset = partial.stat().st_size if partial.exists() else 0
    if wf.size is not None and offset >= wf.size:  # complete but unverified, or garbage: start over
        partial.unlink()
        offset = 0
    req_headers = dict(headers)
    if offset:
        req_headers["Range"] = f"bytes={offset}-"
    shown = _display_url(url)
    try:
        with session.get(url, headers=req_headers, stream=True, timeout=(policy.connect_timeout, policy.read_timeout)) as r:
            if r.status_code == 416:  # our partial is longer than the file: start over
                partial.unlink(missing_ok=True)
                raise _Transient(f"{shown}: HTTP 416 for a resume; starting over")
            if r.status_code not in (200, 206):
                raise _status_error(r, url, job.label, job.gated, "Authorization" in req_headers)
            if r.status_code == 206:
                content_range = r.headers.get("Content-Range", "")
                if not content_range.startswith(f"bytes {offset}-"):
                    partial.unlink(missing_ok=True)
                    raise _Transient(f"{shown}: resume answered with range {content_range!r}; starting over")
            else:
                offset = 0  # the server ignored Range (or there was none): the body is the whole file
            ctype = r.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype.startswith("text/"):
                raise DownloadError(f"{shown}: served {ctype}, not a weights file (an error or login page?)")
            length = r.headers.get("Content-Length")
            body_len = int(length) if length and length.isdigit() else None
            total = offset + body_len if body_len is not None else wf.size
            if wf.size is not None and total is not None and total != wf.size:
                raise DownloadError(f"{shown}: the server announces {total} bytes, expected {wf.size}")
            if total is not None:
                _check_space(partial.parent, total - offset, url)

            sha, md5 = hashlib.sha256(), hashlib.md5() if wf.md5 else None
            if offset:  # resume: the hash must cover the bytes already on disk
                with open(partial, "rb") as f:
                    while chunk := f.read(HASH_CHUNK):
                        sha.update(chunk)
                        if md5 is not None:
                            md5.update(chunk)
            if bar is not None:
                bar.update(bar.task_ids[0], total=total, completed=offset)
            received = 0
            with open(partial, "ab" if offset else "wb") as f:
                for chunk in r.iter_content(job.chunk_size):
                    if offset + received == 0 and _looks_like_html(chunk):
                        raise DownloadError(f"{shown}: served an HTML page, not a weights file")
                    f.write(chunk)
                    sha.update(chunk)
                    if md5 is not None:
                        md5.update(chunk)
                    received += len(chunk)
                    if wf.size is not None and offset + received > wf.size:
                        raise DownloadError(f"{shown}: more than the expected {wf.size} bytes")
                    if bar is not None:
                        bar.advance(bar.task_ids[0], len(chunk))
                f.flush()
                os.fsync(f.fileno())
            if body_len is not None and received < body_len:
                raise _Transient(f"{shown}: connection closed after {offset + received} of {total} bytes")
    except requests.Timeout as e:
        raise _Transient(f"{shown}: timed out ({type(e).__name__})") from e
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
        raise _Transient(f"{shown}: connection failed or dropped ({type(e).__name__})") from e
    return sha.hexdigest(), md5.hexdigest() if md5 is not None else None


def _with_retries(job: _Job, session: requests.Session, url: str, headers: dict[str, str], bar) -> tuple[str, str | None]:
    """`_attempt` until it succeeds, backing off exponentially on transient failures.

    A bad file (DownloadError) deletes the partial at once; exhausted retries keep it for resume.
    """
    for attempt in range(job.policy.retries + 1):
        try:
            return _attempt(job, session, url, headers, bar)
        except _Transient as e:
            if attempt == job.policy.retries:
                raise DownloadError(f"{e} (gave up after {attempt + 1} attempts; rerun to resume)") from None
            time.sleep(job.policy.base_delay * 2**attempt)
        except DownloadError:
            job.partial.unlink(missing_ok=True)
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _download(job: _Job, urls: tuple[str, ...], dest: Path, headers_for, show_progress: bool) -> str:
    """Download into the partial file (URLs in order), check size and hash, rename it onto `dest`."""
    wf, partial, label = job.wf, job.partial, job.label
    errors: list[str] = []
    for url in urls:
        try:
            with requests.Session() as session, _progress(show_progress, label) as bar:
                if bar is not None:
                    bar.add_task(label, total=wf.size)
                sha, md5 = _with_retries(job, session, url, headers_for(url), bar)
        except DownloadError as e:
            errors.append(str(e))
            continue
        size, shown = partial.stat().st_size, _display_url(url)
        if wf.size is not None and size != wf.size:
            errors.append(f"{shown}: got {size} bytes, expected {wf.size}")
        elif wf.sha256 and sha != wf.sha256.lower():
            errors.append(f"{shown}: sha256 mismatch: expected {wf.sha256.lower()}, got {sha}")
        elif wf.md5 and md5 != wf.md5.lower():
            errors.append(f"{shown}: md5 mismatch: expected {wf.md5.lower()}, got {md5}")
        else:
            os.replace(partial, dest)
            if not wf.sha256 and not wf.md5:
                _record_sha256(dest, sha)
            return sha
        partial.unlink(missing_ok=True)
    raise DownloadError("; ".join(errors) if errors else f"{label}: no URL to download from")


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
    process had to wait for another one that was downloading it.
    """
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
        dest.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(dest.with_name(dest.name + ".lock")) as waited:
            partial = dest.with_name(dest.name + ".partial")
            if dest.is_file() and not force:
                if verify or waited:
                    return FetchResult(dest, "verified", verify_file(wf, dest))
                if wf.size is not None and dest.stat().st_size != wf.size:
                    raise DownloadError(f"{dest}: {dest.stat().st_size} bytes, expected {wf.size} (altered?); fetch it again with --force")
                return FetchResult(dest, "cached")
            if is_offline():
                where = _display_url(urls[0]) if urls else label
                raise OfflineError(f"{where}: not cached, and offline mode is on (VAECLI_OFFLINE / HF_HUB_OFFLINE)")
            if force:
                partial.unlink(missing_ok=True)
            show = not quiet and sys.stderr.isatty()
            job = _Job(wf, partial, policy, chunk_size, label, gated)
            sha = _download(job, urls, dest, headers_for, show)
            return FetchResult(dest, "downloaded", sha)
    except DownloadError as e:
        raise type(e)(redact(str(e), token)) from None


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
    """Fetch every file of a registry (or custom) entry into the cache; HF_TOKEN is the default token."""
    token = token or os.environ.get("HF_TOKEN") or None
    return [
        fetch_file(
            wf,
            cached_file(entry.name, wf, root),
            token=token,
            token_hosts=token_hosts,
            label=entry.name,
            gated=entry.gated,
            force=force,
            verify=verify,
            quiet=quiet,
            policy=policy,
        )
        for wf in entry.files
    ]


def download(url: str, local_path: str | Path, chunk_size: int = 1024) -> None:
    """The seed's helper: download `url` to `local_path` (always anew), with every safeguard above."""
    path = Path(local_path)
    wf = WeightFile(filename=path.name, urls=(url,))
    fetch_file(wf, path, token=os.environ.get("HF_TOKEN") or None, force=True, quiet=False, chunk_size=chunk_size)


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
