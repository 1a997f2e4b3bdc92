"""One bad input or one bad path never aborts a run: the issue's isolation defects, through the real CLI.

A full disk (a real 1 MiB tmpfs in a private mount namespace), a truncated animated GIF, and -o /
--report paths that cannot work: each is either that input's failure with the others still done,
or a setup error (exit 2) before any work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import imageio.v2 as iio
import numpy as np
import pytest

from tests.clitools import by_name, noise_image, run_json, run_main, snapshot


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--mount", "--map-root-user", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def _on_a_private_tmpfs(mountpoint, options: str, script: str) -> subprocess.CompletedProcess:
    """`script` (sh; `vaecli` is the real command of this tree) with a tmpfs mounted on `mountpoint`, seen by it alone."""
    script = f"mount -t tmpfs -o {options} tmpfs {mountpoint} && " + script.replace("vaecli ", f"{sys.executable} -m vaecli ", 1)
    return subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=os.getcwd()))


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare and mount (a private tmpfs)")
def test_a_full_disk_fails_only_the_inputs_that_do_not_fit(tmp_path):
    """encode of 64x64 images at batch size 1 onto a 16 KiB disk: some latents fit, the others fail with
    ENOSPC, every input is tried and reported (it was "internal error", exit 2, no summary)."""
    src = tmp_path / "src"
    for i in range(8):
        noise_image(src / f"img{i}.png", 64, 64, i)
    disk = tmp_path / "disk"
    disk.mkdir()
    p = _on_a_private_tmpfs(disk, "size=16k", f"vaecli encode {src} -o {disk}/out --device cpu --batch-size 1 --json > {tmp_path}/doc.json; "
                            f"echo $? > {tmp_path}/code; ls -a {disk}/out > {tmp_path}/left")
    doc = json.loads((tmp_path / "doc.json").read_text())
    statuses = [r["status"] for r in doc["results"]]
    assert (tmp_path / "code").read_text().strip() == "1", p.stderr
    assert len(statuses) == 8 and "ok" in statuses and "failed" in statuses, statuses  # every input tried, each reported
    assert "internal error" not in p.stderr and "Traceback" not in p.stderr
    failed = [r for r in doc["results"] if r["status"] == "failed"]
    assert all(r["error"].endswith("cannot write (No space left on device)") for r in failed), failed[0]["error"]
    left = (tmp_path / "left").read_text().split()
    assert not [n for n in left if n.startswith(".vaecli-tmp-")]  # no partial file stays behind
    assert doc["summary"]["total"] == 8


def test_a_truncated_gif_fails_alone_and_the_next_videos_are_done(tmp_path, capsys, cli_weights):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(6)]
    vids = tmp_path / "vids"
    vids.mkdir()
    iio.mimsave(vids / "a_broken.gif", frames, duration=100, loop=0)
    data = (vids / "a_broken.gif").read_bytes()
    (vids / "a_broken.gif").write_bytes(data[: int(len(data) * 0.6)])  # cut inside a later frame
    iio.mimsave(vids / "b_fine.gif", frames[:3], duration=100, loop=0)
    for command in ("encode", "roundtrip"):
        extra = ["--no-lpips"] if command == "roundtrip" else []
        code, doc, err = run_json(capsys, command, vids, "-o", tmp_path / command, "--weights", cli_weights, "--device", "cpu", *extra)
        res = by_name(doc)
        assert code == 1 and res["a_broken.gif"]["status"] == "failed" and res["b_fine.gif"]["status"] == "ok", err
        assert "a_broken.gif: corrupt or truncated GIF" in res["a_broken.gif"]["error"] and "internal error" not in err


@pytest.mark.parametrize("case", ["report-is-a-folder", "report-parent-missing", "output-is-a-file"])
def test_bad_output_paths_are_setup_errors_before_any_work(tmp_path, capsys, cli_weights, case):
    src = noise_image(tmp_path / "in" / "a.png", 16, 16, 0)
    args = ["roundtrip", src, "--weights", cli_weights, "--device", "cpu", "--no-lpips", "-o", tmp_path / "out"]
    if case == "report-is-a-folder":
        (tmp_path / "r.csv").mkdir()
        args += ["--report", tmp_path / "r.csv"]
    elif case == "report-parent-missing":
        args += ["--report", tmp_path / "no" / "such" / "r.json"]
    else:
        args[-1] = src  # -o names an existing file
    before = snapshot(tmp_path)
    code, out, err = run_main(capsys, *args)
    assert code == 2 and out == "" and "Traceback" not in err and "internal error" not in err
    assert snapshot(tmp_path) == before  # no output was made before the setup error


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare and mount (a private tmpfs)")
def test_a_report_on_a_read_only_disk_is_a_setup_error(tmp_path, cli_weights):
    """A read-only mount refuses the write whoever runs it (root ignores file modes)."""
    src = noise_image(tmp_path / "a.png", 16, 16, 0)
    ro = tmp_path / "ro"
    ro.mkdir()
    p = _on_a_private_tmpfs(ro, "size=64k,ro", f"vaecli roundtrip {src} --weights {cli_weights} --device cpu --no-lpips "
                            f"--report {ro}/r.csv -o {tmp_path}/out")
    assert p.returncode == 2 and "--report" in p.stderr and "Read-only file system" in p.stderr, p.stderr
    assert not (tmp_path / "out").exists()
