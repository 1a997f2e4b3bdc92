"""Atomic file writes: a locked temporary file in the target folder, renamed onto the target only when complete.

Ctrl-C, kill -9 or a full disk can interrupt a write; a reader then still sees either the old file
or none, never a truncated one. The temporary is created with the mode the umask allows (0644
under umask 022, as any other program's output), is fsynced before the rename, and the folder is
fsynced after it, so a power cut cannot lose a file reported as written.

While a temporary is being written its writer holds an exclusive flock on it; the lock dies with
the process. `sweep_abandoned` removes only temporaries nobody holds, so a run never deletes the
temporary of another run writing into the same folder at the same time. A sweep may come between a
temporary's creation and its lock; the writer then finds its name gone (or taken by another file) once
it holds the lock, and starts over with a new name. So a sweep needs no grace period: a rerun removes
what a killed run left, however recently.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

TMP_PREFIX = ".vaecli-tmp-"


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in `folder` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a folder; the rename itself already happened
        pass
    finally:
        os.close(fd)


def _create_locked(folder: Path, suffix: str) -> tuple[int, Path]:
    """A new, empty, flock-ed temporary in `folder`, created with 0666 & ~umask."""
    for _ in range(100):
        path = folder / f"{TMP_PREFIX}{secrets.token_hex(6)}{suffix}"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _names(path, fd):
            return fd, path
        os.close(fd)  # a sweep removed it between open and flock: this inode is unlinked, start over
    raise FileExistsError(errno.EEXIST, "cannot create a unique temporary file", str(folder))


def _names(path: Path, fd: int) -> bool:
    """True when `path` is still the file open as `fd` (same device and inode)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def _make_folders(folder: Path) -> list[Path]:
    """mkdir -p `folder`; returns the folders it created, deepest first."""
    made = []
    while not folder.exists() and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    for f in reversed(made):
        f.mkdir(exist_ok=True)
    return made


def _remove_if_empty(folders: list[Path]) -> None:
    """Undo _make_folders for what stayed empty (a failed output), so a failure leaves no folder behind."""
    for f in folders:
        try:
            f.rmdir()
        except OSError:  # not empty: an output, or another run's file, is in it
            return


@contextlib.contextmanager
def scratch_path(folder: str | Path, suffix: str = "") -> Iterator[Path]:
    """A locked temporary file in `folder` for intermediate data, removed on exit whatever happens.

    Folders it had to create are removed again if they are empty on exit: an output that failed leaves
    nothing behind, not even its folder.
    """
    folder = Path(folder)
    made = _make_folders(folder)
    try:
        fd, tmp = _create_locked(folder, suffix)
    except FileNotFoundError:  # another run removed the folder it had made, just now: make it again
        made += _make_folders(folder)
        fd, tmp = _create_locked(folder, suffix)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)
        _remove_if_empty(made)


@contextlib.contextmanager
def atomic_path(target: str | Path, before_replace: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `target` for the caller to write; then fsync it and rename it onto `target`.

    `before_replace` runs just before the rename and may raise to keep the target as it is (the
    output-safety check that the target is still ours to replace). On any error the temporary is
    removed and the target left untouched.
    """
    target = Path(target)
    with scratch_path(target.parent, target.suffix) as tmp:
        mode = os.stat(tmp).st_mode & 0o777  # 0666 & ~umask, as created
        yield tmp
        with open(tmp, "rb+") as f:  # a writer may have replaced the file at `tmp`: sync (and fix) what is there now
            if os.fstat(f.fileno()).st_mode & 0o777 != mode:
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, target)
        fsync_dir(target.parent)


def sweep_abandoned(folders: Iterable[Path]) -> int:
    """Remove temporaries left by killed runs (no live writer holds their lock); returns how many."""
    removed = 0
    for folder in folders:
        try:
            candidates = [p for p in Path(folder).iterdir() if p.name.startswith(TMP_PREFIX)]
        except OSError:  # the folder does not exist (yet) or cannot be listed
            continue
        for tmp in candidates:
            try:
                if not tmp.is_file():
                    continue
                fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a live writer holds it
                os.close(fd)
                continue
            try:
                tmp.unlink()
                removed += 1
            except OSError:
                pass
            finally:
                os.close(fd)
    return removed
