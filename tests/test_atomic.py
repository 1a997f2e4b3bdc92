"""Atomic writes: umask modes, fsync of file and folder, untouched targets on failure, and the sweep of abandoned temporaries."""

from __future__ import annotations

import fcntl
import os
import time

import numpy as np
import pytest
import torch

from vaecli.io import atomic
from vaecli.io.atomic import TMP_PREFIX, atomic_path, sweep_abandoned
from vaecli.io.images import write_image
from vaecli.io.video import VideoWriter


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path, umask, mode):
    frames = [np.zeros((8, 8, 3), np.uint8)] * 2
    old = os.umask(umask)
    try:
        write_image(torch.rand(3, 8, 8), tmp_path / "a.png")
        for name in ("v.mp4", "v.gif"):
            with VideoWriter(tmp_path / name, 10.0) as out:
                out.append(frames)
    finally:
        os.umask(old)
    for name in ("a.png", "v.mp4", "v.gif"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "v.gif", "v.mp4"]  # no scratch files left


def test_the_file_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}"))), real_fsync(fd)))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append(("replace", None)), real_replace(a, b)))
    with atomic_path(tmp_path / "x.txt") as tmp:
        tmp.write_text("done")
    assert events == [("fsync", False), ("replace", None), ("fsync", True)]
    assert (tmp_path / "x.txt").read_text() == "done"


def test_a_failed_write_or_a_refused_replace_keeps_the_target(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(OSError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(28, "No space left on device")

    def refuse():
        raise RuntimeError("not ours")

    with pytest.raises(RuntimeError):
        with atomic_path(target, before_replace=refuse) as tmp:
            tmp.write_text("new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_sweep_removes_only_abandoned_temporaries(tmp_path):
    old = time.time() - 60
    abandoned = tmp_path / f"{TMP_PREFIX}dead.png"  # as kill -9 leaves one: nobody holds its lock
    abandoned.write_bytes(b"partial")
    os.utime(abandoned, (old, old))
    live = tmp_path / f"{TMP_PREFIX}live.png"  # another run still writing it, for a minute already
    live.write_bytes(b"growing")
    os.utime(live, (old, old))
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    young = tmp_path / f"{TMP_PREFIX}young.png"  # a run killed a moment ago: a rerun removes it at once
    young.write_bytes(b"partial")
    try:
        assert sweep_abandoned([tmp_path, tmp_path / "missing"]) == 2
        assert not abandoned.exists() and live.exists() and not young.exists()
    finally:
        os.close(fd)
    os.utime(live, (old, old))
    assert sweep_abandoned([tmp_path]) == 1 and not live.exists()  # its writer is gone now


def test_a_sweep_between_creation_and_lock_makes_the_writer_start_over(tmp_path, monkeypatch):
    """The one window a sweep could hit: a temporary created but not yet locked. The writer must notice."""
    real_flock = fcntl.flock
    swept = []

    def flock_after_a_sweep(fd, op):
        if not swept:  # another run sweeps the folder just before this writer's first lock
            monkeypatch.setattr(fcntl, "flock", real_flock)
            swept.append(sweep_abandoned([tmp_path]))
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_after_a_sweep)
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.exists()  # the path the writer got is a file on disk, not the swept one
        tmp.write_text("complete")
    assert swept == [1]  # the sweep did remove the first, unlocked temporary
    assert target.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
