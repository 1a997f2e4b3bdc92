"""Moving one file over HTTP into its partial file: resume, retries, and refusing what is not the file.

The caller (download.py) holds the lock and owns the cache; this module only transfers. A dropped
connection resumes with a Range request (starting over when the server ignores it); connection
errors, timeouts, 408/429 and 5xx are retried with exponential backoff; a host whose name does not
resolve, any 4xx, an HTML page, a text content type, a wrong size or hash fail at once. The partial
file is kept only after failures a resume can fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from ..errors import DownloadError, RemoteMissingError
from ..io.hashing import HASH_CHUNK
from .hub import display_url, url_host
from .integrity import record_sha256
from .registry import WeightFile

CHUNK_SIZE = 64 << 10  # network reads: a dropped connection loses at most the chunk in flight
DISK_MARGIN = 64 << 20  # keep this much free beyond the file: a full disk breaks more than the download


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: transient failures (connection, timeout, 5xx, 429) back off exponentially."""

    retries: int = 4  # attempts after the first
    base_delay: float = field(default_factory=lambda: float(os.environ.get("VAECLI_RETRY_DELAY", "1.0")))
    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # seconds without a byte, not for the whole file


class _Transient(Exception):
    """A failure a later attempt can fix; the partial file is kept for resume."""


class _Unreachable(Exception):
    """The host's name does not resolve: no attempt now can fix it, a later run may resume the partial."""


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
    where = f"{display_url(url)}: HTTP {code} {r.reason or ''}".rstrip()
    if code in (401, 403):
        if gated and not sent_token:
            return DownloadError(f"{where}: {label} is gated: accept its licence on the model page, then pass a token (--token or HF_TOKEN)")
        if sent_token:
            return DownloadError(f"{where}: the token was refused or has no access to {label}")
        return DownloadError(f"{where}: access denied; if it needs a token, pass --token or set HF_TOKEN")
    if code == 404:
        return RemoteMissingError(f"{where}: not found")
    if code in (408, 429) or code >= 500:
        return _Transient(where)
    return DownloadError(where)


def _check_space(folder: Path, needed: int, url: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed + DISK_MARGIN > free:
        raise DownloadError(f"{display_url(url)}: not enough disk space in {folder}: need {needed} bytes, {free} free")


@dataclass(frozen=True)
class TransferJob:
    """What one file's download needs besides the URL."""

    wf: WeightFile
    partial: Path  # `<name>.partial` beside the destination, private to the lock holder
    policy: RetryPolicy
    chunk_size: int
    label: str  # the model name, for messages
    gated: bool


def _attempt(job: TransferJob, session: requests.Session, url: str, headers: dict[str, str], bar) -> tuple[str, str | None]:
    """One GET into the partial file, resuming from its size; returns (sha256, md5) of the whole file."""
    wf, partial, policy = job.wf, job.partial, job.policy
    offset = partial.stat().st_size if partial.exists() else 0
    if wf.size is not None and offset >= wf.size:  # complete but unverified, or garbage: start over
        partial.unlink()
        offset = 0
    req_headers = dict(headers)
    if offset:
        req_headers["Range"] = f"bytes={offset}-"
    shown = display_url(url)
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
        if _name_unresolved(e):  # retrying will not make the network appear
            raise _Unreachable(f"{shown}: cannot reach {url_host(url)}: the host name does not resolve (offline, or a wrong host?)") from None
        raise _Transient(f"{shown}: connection failed or dropped ({type(e).__name__})") from e
    except requests.RequestException as e:  # a malformed URL or header, too many redirects: not transient
        raise DownloadError(f"{shown}: request failed ({type(e).__name__}: {e})") from None
    return sha.hexdigest(), md5.hexdigest() if md5 is not None else None


def _name_unresolved(error: BaseException) -> bool:
    """Whether a connection error comes from DNS (socket.gaierror), however deep requests wrapped it."""
    seen, todo = set(), [error]
    while todo:
        e = todo.pop()
        if isinstance(e, socket.gaierror):
            return True
        if id(e) in seen:
            continue
        seen.add(id(e))
        nested = [e.__cause__, e.__context__, getattr(e, "reason", None), *getattr(e, "args", ())]
        todo.extend(n for n in nested if isinstance(n, BaseException))
    return False


def _with_retries(job: TransferJob, session: requests.Session, url: str, headers: dict[str, str], bar) -> tuple[str, str | None]:
    """`_attempt` until it succeeds, backing off exponentially on transient failures.

    A bad file (DownloadError) deletes the partial at once; exhausted retries and an unreachable host
    keep it for resume.
    """
    for attempt in range(job.policy.retries + 1):
        try:
            return _attempt(job, session, url, headers, bar)
        except _Transient as e:
            if attempt == job.policy.retries:
                raise DownloadError(f"{e} (gave up after {attempt + 1} attempts; rerun to resume)") from None
            time.sleep(job.policy.base_delay * 2**attempt)
        except _Unreachable as e:
            raise DownloadError(str(e)) from None
        except DownloadError:
            job.partial.unlink(missing_ok=True)
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def transfer_file(job: TransferJob, urls: tuple[str, ...], dest: Path, headers_for, show_progress: bool) -> str:
    """Download into the partial file (URLs in order), check size and hash, rename it onto `dest`."""
    wf, partial, label = job.wf, job.partial, job.label
    errors: list[str] = []
    missing = 0  # URLs that answered 404
    for url in urls:
        try:
            with requests.Session() as session, _progress(show_progress, label) as bar:
                if bar is not None:
                    bar.add_task(label, total=wf.size)
                sha, md5 = _with_retries(job, session, url, headers_for(url), bar)
        except DownloadError as e:
            errors.append(str(e))
            missing += isinstance(e, RemoteMissingError)
            continue
        size, shown = partial.stat().st_size, display_url(url)
        if wf.size is not None and size != wf.size:
            errors.append(f"{shown}: got {size} bytes, expected {wf.size}")
        elif wf.sha256 and sha != wf.sha256.lower():
            errors.append(f"{shown}: sha256 mismatch: expected {wf.sha256.lower()}, got {sha}")
        elif wf.md5 and md5 != wf.md5.lower():
            errors.append(f"{shown}: md5 mismatch: expected {wf.md5.lower()}, got {md5}")
        else:
            os.replace(partial, dest)
            if not wf.sha256 and not wf.md5:
                record_sha256(dest, sha)
            return sha
        partial.unlink(missing_ok=True)
    error = RemoteMissingError if errors and missing == len(errors) else DownloadError
    raise error("; ".join(errors) if errors else f"{label}: no URL to download from")
