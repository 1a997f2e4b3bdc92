"""Decoded videos as players need them: yuv420p by default (even sizes), exact RGB with --lossless-video, bad frame rates refused by name."""

from __future__ import annotations

import json
import re
import subprocess

import imageio.v2 as iio
import imageio_ffmpeg
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import save_file
from skimage import data

from tests.clitools import run_json, run_main
from vaecli.io.video import VideoWriter


def _probe(path) -> tuple[str, str, tuple[int, int]]:
    """(profile, pixel format, (width, height)) of an mp4's video stream, read back by ffmpeg."""
    p = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    line = next(line for line in p.stderr.splitlines() if "Video:" in line)
    m = re.search(r"Video: h264 \(([^)]+)\).*?, (\w+)\(.*?(\d+)x(\d+)", line)
    return m.group(1), m.group(2), (int(m.group(3)), int(m.group(4)))


def _photo_frames(h: int, w: int, n: int = 3) -> list[np.ndarray]:
    return [np.ascontiguousarray(np.roll(data.astronaut(), 9 * i, axis=1)[:h, :w]) for i in range(n)]


@pytest.fixture
def video_latent(tmp_path, capsys, cli_weights):
    """A latent of an odd-sized (65x63) mp4 of a real photograph, encoded by the CLI."""
    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, 10.0, lossless=True) as out:
        out.append(_photo_frames(63, 65))
    code, doc, err = run_json(capsys, "encode", clip, "-o", tmp_path / "lat", "--weights", cli_weights)
    assert code == 0, err
    return tmp_path / "lat" / "clip.safetensors"


def test_decoded_mp4_is_yuv420p_with_even_sizes_or_exact_rgb_on_request(tmp_path, capsys, video_latent):
    code, doc, err = run_json(capsys, "decode", video_latent, "-o", tmp_path / "dec")
    assert code == 0, err
    profile, pix, size = _probe(tmp_path / "dec" / "clip.mp4")
    assert (profile, pix, size) == ("High", "yuv420p", (66, 64))  # the last column and row repeated
    frames = [f for f in iio.get_reader(tmp_path / "dec" / "clip.mp4")]
    assert len(frames) == 3 and np.abs(frames[0][:, 65].astype(int) - frames[0][:, 64]).max() <= 8  # a copy, up to compression

    code, doc, err = run_json(capsys, "decode", video_latent, "-o", tmp_path / "dec", "--lossless-video")
    assert code == 0 and doc["results"][0]["status"] == "ok", err  # another way of writing: redone, not skipped
    profile, pix, size = _probe(tmp_path / "dec" / "clip.mp4")
    assert profile.startswith("High 4:4:4") and pix == "gbrp" and size == (65, 63)
    code, doc, err = run_json(capsys, "decode", video_latent, "-o", tmp_path / "dec", "--lossless-video")
    assert code == 0 and doc["results"][0]["status"] == "skipped"


def test_lossless_video_keeps_every_pixel(tmp_path):
    frames = _photo_frames(31, 47)
    with VideoWriter(tmp_path / "x.mp4", 24.0, lossless=True) as out:
        out.append(frames)
    back = [f for f in iio.get_reader(tmp_path / "x.mp4")]
    assert len(back) == 3 and all(np.array_equal(a, b) for a, b in zip(back, frames))


@pytest.mark.parametrize("fps", ["-5", "5000", "0.0001"])
def test_a_frame_rate_out_of_range_is_one_line_before_ffmpeg_runs(tmp_path, capsys, video_latent, fps):
    with safe_open(str(video_latent), "pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, bad, {**meta, "fps": fps})
    code, out, err = run_main(capsys, "decode", bad, "-o", tmp_path / "new" / "sub", "--json")
    (line,) = err.splitlines()
    assert code == 1 and "bad.safetensors" in line and f"fps='{fps}'" in line
    assert json.loads(out)["results"][0]["status"] == "failed" and not (tmp_path / "new").exists()


def test_a_failed_video_output_leaves_no_folder_behind(tmp_path):
    target = tmp_path / "out" / "a" / "b" / "clip.mp4"
    with pytest.raises(RuntimeError), VideoWriter(target, 10.0) as out:
        out.append(_photo_frames(16, 16, 1))
        raise RuntimeError("the model failed mid-video")
    assert list(tmp_path.iterdir()) == []
    with VideoWriter(target, 10.0) as out:  # and a success keeps its folders
        out.append(_photo_frames(16, 16, 1))
    assert target.is_file()


def test_compare_says_it_makes_nothing_for_a_video(tmp_path, capsys, cli_weights):
    with VideoWriter(tmp_path / "in" / "clip.mp4", 10.0) as out:
        out.append(_photo_frames(32, 32, 2))
    iio.imwrite(tmp_path / "in" / "photo.png", data.astronaut()[:40, :48])
    code, out, err = run_main(capsys, "roundtrip", tmp_path / "in", "-o", tmp_path / "out", "--compare", "--no-lpips", "--quiet", "--weights", cli_weights)
    (line,) = err.splitlines()
    assert code == 0 and line.startswith("Warning: ") and "clip.mp4" in line and "--compare" in line
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mp4", "photo.compare.png", "photo.png"]
