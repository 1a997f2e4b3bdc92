"""encode / decode / roundtrip through the real `vaecli` executable (subprocesses) and through main().

Exit codes, stderr/stdout separation, resume and kill -9 are checked on real processes; finer
checks run main() in-process, which skips the torch import of a fresh interpreter.
"""

from __future__ import annotations

import csv
import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v2 as iio
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.clitools import noise_image, run_main, vaecli
from vaecli.api import load_vae
from vaecli.io.images import pad_to_multiple, read_image
from vaecli.io.latents import read_latent
from vaecli.quality.metrics import psnr, ssim

RESULT_KEYS = {"input", "output", "status", "error"}


@pytest.fixture
def dataset(tmp_path) -> Path:
    """Nested folders of small images, a corrupt PNG, a text file posing as a JPEG, ignorable extras."""
    root = tmp_path / "data"
    noise_image(root / "a.png", 32, 40, 0)
    noise_image(root / "sub" / "b.jpg", 36, 28, 1)
    noise_image(root / "sub" / "deeper" / "c.webp", 20, 24, 2)
    good = (root / "a.png").read_bytes()
    (root / "sub" / "corrupt.png").write_bytes(good[: len(good) // 2])
    (root / "sub" / "readme.jpg").write_text("this is text, not a JPEG\n")
    (root / "captions.txt").write_text("ignored: not an image suffix\n")
    noise_image(root / ".hidden" / "x.png", 8, 8, 3)
    return root


def test_folder_encode_fails_per_file_then_resumes(dataset, tmp_path, capsys, cli_weights):
    out = tmp_path / "out"
    common = ("--weights", cli_weights, "--device", "cpu", "--batch-size", "2")
    p = vaecli("encode", dataset, "-o", out, *common)
    assert p.returncode == 1, p.stderr
    assert "corrupt.png" in p.stderr and "readme.jpg" in p.stderr and "Traceback" not in p.stderr
    written = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file())
    assert written == ["a.safetensors", "sub/b.safetensors", "sub/deeper/c.safetensors"]
    assert "encoded 3 ok, 0 skipped, 2 failed of 5" in p.stdout

    (dataset / "sub" / "corrupt.png").unlink()
    (dataset / "sub" / "readme.jpg").unlink()
    p = vaecli("encode", dataset, "-o", out, *common, "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert [r["status"] for r in doc["results"]] == ["skipped"] * 3
    assert doc["summary"] | {"seconds": 0} == {"total": 3, "ok": 0, "skipped": 3, "failed": 0, "seconds": 0}

    noise_image(dataset / "a.png", 32, 40, 99)  # the source changed: its latent is stale
    before = (out / "sub" / "b.safetensors").stat().st_mtime_ns
    code, stdout, _ = run_main(capsys, "encode", dataset, "-o", out, *common, "--json")
    assert [r["status"] for r in json.loads(stdout)["results"]] == ["ok", "skipped", "skipped"]
    code, stdout, _ = run_main(capsys, "encode", dataset, "-o", out, *common, "--json", "--overwrite")
    assert code == 0 and [r["status"] for r in json.loads(stdout)["results"]] == ["ok"] * 3
    assert (out / "sub" / "b.safetensors").stat().st_mtime_ns != before
    # made another way (here: unscaled) is not "up to date": redone once, then skipped
    for want in ("ok", "skipped"):
        code, stdout, _ = run_main(capsys, "encode", dataset, "-o", out, *common, "--json", "--no-scale")
        assert code == 0 and [r["status"] for r in json.loads(stdout)["results"]] == [want] * 3


def test_rgba_517x301_roundtrips_to_its_size_with_no_decode_flags(tmp_path, capsys, cli_weights):
    src = noise_image(tmp_path / "in" / "pic.png", 517, 301, 5, "RGBA")
    p = vaecli("encode", src, "-o", tmp_path / "lat", "--weights", cli_weights, "--device", "cpu")
    assert p.returncode == 0, p.stderr
    lat = read_latent(tmp_path / "lat" / "pic.safetensors")
    assert lat.tensor.shape == (4, 38, 65)  # ceil(301/8) x ceil(517/8) after reflect padding to 304x520
    assert (lat.meta.height, lat.meta.width, lat.meta.scaled) == (301, 517, True)
    assert "reflect" in lat.meta.size_handling and lat.meta.model == "tiny-f8"

    code, _, err = run_main(capsys, "decode", tmp_path / "lat" / "pic.safetensors", "-o", tmp_path / "dec")
    assert code == 0, err
    img = Image.open(tmp_path / "dec" / "pic.png")
    assert (img.size, img.mode) == ((517, 301), "RGB")

    # The file decodes to what the model gives for the unscaled latent, cropped (independent path).
    vae = load_vae(weights=cli_weights, device="cpu")
    raw = lat.tensor / 0.5 + 0.1  # the fixture's scaling_factor and shift_factor
    want = ((vae.decode(raw[None]) + 1) / 2).clamp(0, 1)[0, :, :301, :517]
    got = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    assert (got - want).abs().max() <= 0.5 / 255 + 1e-4
    # And the latent is the mode of the padded, alpha-composited (white) image.
    x, _ = pad_to_multiple(read_image(src), 8)
    assert torch.allclose(vae.scale_latents(vae.encode(x[None] * 2 - 1).mode())[0], lat.tensor, atol=1e-4)


def test_json_schema_and_progress_only_on_a_terminal(tmp_path, capsys, cli_weights):
    noise_image(tmp_path / "a.png", 24, 24, 0)
    noise_image(tmp_path / "b.png", 16, 20, 1)
    args = ["encode", tmp_path / "a.png", tmp_path / "b.png", tmp_path / "missing.png", "-o", tmp_path / "o", "--weights", cli_weights, "--device", "cpu"]
    code, out, err = run_main(capsys, *args, "--json")
    assert code == 1
    doc = json.loads(out)  # exactly one JSON document on stdout
    assert set(doc) == {"results", "summary"} and len(doc["results"]) == 3
    for r in doc["results"]:
        assert RESULT_KEYS <= set(r) and r["status"] in ("ok", "skipped", "failed")
    ok = [r for r in doc["results"] if r["status"] == "ok"]
    assert [r["shape"] for r in ok] == [[4, 3, 3], [4, 3, 2]]  # 16x20 pads to 16x24
    assert doc["results"][2]["error"].endswith("missing.png: no such file or folder")
    assert {"total", "ok", "skipped", "failed", "seconds"} <= set(doc["summary"])
    assert "encode" not in err.replace("missing.png", "")  # no progress bar when stderr is not a terminal

    # stderr on a pseudo-terminal: the progress bar appears, unless --quiet
    def stderr_on_tty(*extra) -> str:
        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "vaecli", *map(str, args), "--overwrite", *extra], stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=120)
        os.close(master)
        return b"".join(chunks).decode(errors="replace")

    assert "encode" in stderr_on_tty()
    assert "encode" not in stderr_on_tty("--quiet")


def test_setup_and_usage_errors_exit_2_without_traceback(tmp_path):
    img = noise_image(tmp_path / "a.png", 8, 8, 0)
    env = {"VAECLI_CACHE": str(tmp_path / "cache")}
    p = vaecli("encode", img, "--model", "sd-vae-ft-mse", "-o", tmp_path / "o", env=env)
    assert p.returncode == 2 and "vaecli fetch-weights sd-vae-ft-mse" in p.stderr and "Traceback" not in p.stderr
    p = vaecli("encode", "--no-such-option", img)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    p = vaecli("decode", img, "--config", tmp_path / "nope.yaml", "--weights", tmp_path / "nope.safetensors", env={"VAECLI_DEBUG": "1"})
    assert p.returncode != 0 and "Traceback" in p.stderr  # tracebacks only when asked for


def test_usage_errors_in_process(tmp_path, capsys, cli_weights):
    img = noise_image(tmp_path / "a.png", 8, 8, 0)
    for args in (
        ["encode"],
        ["encode", img, "--resize", "12xq", "--weights", cli_weights],
        ["roundtrip", img, "--compare", "--weights", cli_weights],
        ["encode", img, "--model", "no-such-model"],
        ["encode", img, "--config", tmp_path / "nope.yaml", "--weights", cli_weights],
        ["encode", img, "--dtype", "fp8"],
    ):
        code, out, err = run_main(capsys, *args)
        assert code == 2, (args, err)
        assert out == "" and "Traceback" not in err


def test_gif_and_mp4_encode_to_frames_and_decode_with_same_count_and_fps(tmp_path, capsys, cli_weights):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (20, 28, 3), dtype=np.uint8) for _ in range(5)]
    vids = tmp_path / "vids"
    vids.mkdir()
    iio.mimsave(vids / "anim.gif", frames, duration=200, loop=0)  # 5 fps (GIF stores centiseconds)
    with iio.get_writer(vids / "clip.mp4", fps=12, codec="libx264", macro_block_size=1) as w:
        for f in frames + frames[:2]:
            w.append_data(f)
    code, _, err = run_main(capsys, "encode", vids, "-o", tmp_path / "lat", "--weights", cli_weights, "--device", "cpu", "--batch-size", "3", "--json")
    assert code == 0, err
    gif_lat, mp4_lat = read_latent(tmp_path / "lat" / "anim.safetensors"), read_latent(tmp_path / "lat" / "clip.safetensors")
    assert gif_lat.tensor.shape == (5, 4, 3, 4) and gif_lat.meta.fps == pytest.approx(5.0) and gif_lat.meta.frames == 5
    assert mp4_lat.tensor.shape == (7, 4, 3, 4) and mp4_lat.meta.fps == pytest.approx(12.0)

    code, _, err = run_main(capsys, "decode", tmp_path / "lat", "-o", tmp_path / "dec", "--json")
    assert code == 0, err
    gif = Image.open(tmp_path / "dec" / "anim.gif")
    assert gif.n_frames == 5 and gif.info["duration"] == 200 and gif.size == (28, 20)
    reader = iio.get_reader(tmp_path / "dec" / "clip.mp4")
    assert reader.get_meta_data()["fps"] == pytest.approx(12.0) and reader.count_frames() == 7
    assert reader.get_meta_data()["size"] == (28, 20)


def outputs(folder: Path) -> list[Path]:
    """The visible outputs; a kill -9 may leave a hidden .vaecli-tmp-* file that no reader picks up."""
    return sorted(f for f in folder.glob("*.safetensors") if not f.name.startswith("."))


def test_ctrl_c_and_kill_9_leave_only_complete_outputs_and_rerun_matches_uninterrupted(tmp_path, capsys, cli_weights):
    src = tmp_path / "many"
    for i in range(12):  # 192x192 at batch size 1: slow enough per file to be killed between files
        noise_image(src / f"img{i:02d}.png", 192, 192, i)
    args = ["encode", src, "--weights", cli_weights, "--device", "cpu", "--batch-size", "1", "--quiet"]
    assert run_main(capsys, *args, "-o", tmp_path / "ref")[0] == 0

    out = tmp_path / "out"

    def interrupt(sig: int, after: int) -> tuple[int, str]:
        """Start a run, send `sig` once `after` outputs are visible; (exit code, stderr)."""
        proc = subprocess.Popen([sys.executable, "-m", "vaecli", *map(str, args), "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while len(outputs(out)) < after and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        proc.send_signal(signal.SIGSTOP)  # frozen at once, so the signal lands mid-run even on a fast, quiet machine
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)
        err = proc.communicate()[1]
        return proc.returncode, err

    code, err = interrupt(signal.SIGINT, 2)  # Ctrl-C: finishes the write in flight, says how to go on
    assert code == 130 and "rerun" in err and "Traceback" not in err
    interrupt(signal.SIGKILL, len(outputs(out)) + 2)
    done = outputs(out)
    assert 4 <= len(done) < 12, "the runs must be stopped mid-way for this test to mean anything"
    for f in done:  # every visible output is complete and readable
        assert read_latent(f).tensor.shape == (4, 24, 24)

    crash_tmp = out / ".vaecli-tmp-left-by-a-crash.safetensors"  # as a kill -9 a moment ago would leave
    crash_tmp.write_bytes(b"partial")
    p = vaecli(*args, "-o", out, "--json")
    assert p.returncode == 0, p.stderr
    assert not list(out.glob(".vaecli-tmp-*")), "the rerun removes what killed runs left, however recent"
    statuses = [r["status"] for r in json.loads(p.stdout)["results"]]
    assert statuses.count("skipped") == len(done) and statuses.count("ok") == 12 - len(done)
    assert [f.name for f in outputs(out)] == [f.name for f in outputs(tmp_path / "ref")]
    for f in outputs(tmp_path / "ref"):
        assert torch.equal(read_latent(f).tensor, read_latent(out / f.name).tensor)


def test_roundtrip_reports_metrics_that_match_the_saved_reconstructions(tmp_path, capsys, cli_weights):
    noise_image(tmp_path / "in" / "a.png", 40, 32, 0)
    noise_image(tmp_path / "in" / "b.png", 27, 33, 1)
    (tmp_path / "in" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code, out, err = run_main(
        capsys, "roundtrip", tmp_path / "in", "-o", tmp_path / "rt", "--compare", "--report", tmp_path / "r.csv",
        "--weights", cli_weights, "--device", "cpu", "--json", "--no-lpips",
    )
    assert code == 1 and "bad.png" in err
    doc = json.loads(out)
    by_name = {Path(r["input"]).name: r for r in doc["results"]}
    assert by_name["bad.png"]["status"] == "failed"
    for name in ("a.png", "b.png"):
        r = by_name[name]
        x = read_image(tmp_path / "in" / name)[None]
        y = read_image(tmp_path / "rt" / name)[None]  # saved as 8-bit PNG: close to, not equal to, the float metric
        assert y.shape == x.shape
        assert r["psnr"] == pytest.approx(float(psnr(x, y)[0]), abs=0.05)
        assert r["ssim"] == pytest.approx(float(ssim(x, y)[0]), abs=0.02)
        assert Image.open(tmp_path / "rt" / (Path(name).stem + ".compare.png")).size == (2 * x.shape[-1], x.shape[-2])
    assert doc["summary"]["mean_psnr"] == pytest.approx((by_name["a.png"]["psnr"] + by_name["b.png"]["psnr"]) / 2)
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert [Path(r["input"]).name for r in rows] == ["a.png", "b.png", "bad.png"]
    assert float(rows[0]["psnr"]) == pytest.approx(by_name["a.png"]["psnr"])


def test_decode_foreign_and_broken_latents(tmp_path, capsys, cli_weights):
    vae = load_vae(weights=cli_weights, device="cpu")
    torch.manual_seed(0)
    raw = torch.randn(4, 3, 2)
    d = tmp_path / "lat"
    d.mkdir()
    np.save(d / "raw.npy", raw.numpy())
    np.save(d / "wrong.npy", torch.randn(16, 3, 2).numpy())
    np.save(d / "nan.npy", np.full((4, 2, 2), np.nan, np.float32))
    code, out, err = run_main(capsys, "decode", d, "-o", tmp_path / "dec", "--weights", cli_weights, "--unscaled", "--json")
    assert code == 1
    res = {Path(r["input"]).name: r for r in json.loads(out)["results"]}
    assert "16 channels but the model expects 4" in res["wrong.npy"]["error"] and "wrong.npy" in err
    assert "NaN" in res["nan.npy"]["error"]
    want = ((vae.decode(raw[None]) + 1) / 2).clamp(0, 1)[0]
    got = read_image(tmp_path / "dec" / "raw.png")
    assert got.shape == (3, 24, 16) and (got - want).abs().max() <= 0.5 / 255 + 1e-4

    code, out, _ = run_main(capsys, "decode", d / "raw.npy", "-o", tmp_path / "dec", "--weights", cli_weights, "--unscaled", "--json")
    assert [r["status"] for r in json.loads(out)["results"]] == ["skipped"]
    os.utime(d / "raw.npy", ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same bytes (sha256): still up to date
    code, out, _ = run_main(capsys, "decode", d / "raw.npy", "-o", tmp_path / "dec", "--weights", cli_weights, "--unscaled", "--json")
    assert [r["status"] for r in json.loads(out)["results"]] == ["skipped"]
    np.save(d / "raw.npy", (raw + 1).numpy())  # the latent changed after decoding
    code, out, _ = run_main(capsys, "decode", d / "raw.npy", "-o", tmp_path / "dec", "--weights", cli_weights, "--unscaled", "--json")
    assert [r["status"] for r in json.loads(out)["results"]] == ["ok"]

    code, _, err = run_main(capsys, "decode", d / "raw.npy", "-o", tmp_path / "dec2")
    assert code == 1 and "not a vaecli latent" in err  # a foreign latent needs the model named


def test_models_and_info(tmp_path, capsys, cli_weights):
    code, out, _ = run_main(capsys, "models", "--json")
    rows = {r["name"]: r for r in json.loads(out)["models"]}
    assert code == 0 and "vaecli-default" in rows
    code, out, _ = run_main(capsys, "info", cli_weights, "--json")
    (f,) = json.loads(out)["files"]
    assert code == 0 and f["kind"] == "weights" and f["metadata"]["vaecli_config"]["name"] == "tiny-f8"
    code, out, err = run_main(capsys, "info", tmp_path / "missing.safetensors")
    assert code == 1 and "missing.safetensors" in err


def test_help_does_not_import_torch():
    for args in (["--help"], ["encode", "--help"], ["decode", "--help"]):
        p = subprocess.run([sys.executable, "-X", "importtime", "-m", "vaecli", *args], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and "Usage" in p.stdout
        imported = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines()}
        assert "torch" not in imported, args


def test_sample_seed_save_dist_no_scale_and_resize(tmp_path, capsys, cli_weights):
    src = noise_image(tmp_path / "in" / "p.png", 40, 24, 0)
    common = ["--weights", cli_weights, "--device", "cpu", "--save-dist"]
    assert run_main(capsys, "encode", src, "-o", tmp_path / "s", "--sample", "--seed", "3", *common)[0] == 0
    lat = read_latent(tmp_path / "s" / "p.safetensors")
    tensors = load_file(tmp_path / "s" / "p.safetensors")
    mean, logvar = tensors["mean"], tensors["logvar"]
    assert lat.meta.posterior == "sample" and lat.meta.seed == 3 and lat.meta.sample_seed not in (None, 3)
    # the draw is reproducible from the metadata alone: latent = scale * (mean + std * eps(sample_seed) - shift)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(lat.meta.sample_seed))
    torch.testing.assert_close(lat.tensor, 0.5 * (mean + torch.exp(0.5 * logvar) * eps - 0.1), rtol=1e-5, atol=1e-5)
    assert run_main(capsys, "encode", src, "-o", tmp_path / "s2", "--sample", "--seed", "3", *common)[0] == 0
    assert torch.equal(read_latent(tmp_path / "s2" / "p.safetensors").tensor, lat.tensor)
    assert run_main(capsys, "encode", src, "-o", tmp_path / "s3", "--sample", "--seed", "4", *common)[0] == 0
    assert not torch.equal(read_latent(tmp_path / "s3" / "p.safetensors").tensor, lat.tensor)

    assert run_main(capsys, "encode", src, "-o", tmp_path / "raw", "--no-scale", *common)[0] == 0
    raw = read_latent(tmp_path / "raw" / "p.safetensors")
    assert raw.meta.scaled is False and raw.meta.posterior == "mode"
    assert torch.equal(raw.tensor, load_file(tmp_path / "raw" / "p.safetensors")["mean"])
    assert run_main(capsys, "decode", tmp_path / "raw", "-o", tmp_path / "rawdec")[0] == 0
    assert Image.open(tmp_path / "rawdec" / "p.png").size == (40, 24)

    assert run_main(capsys, "encode", src, "-o", tmp_path / "rc", "--resize", "16", "--center-crop", *common)[0] == 0
    rc = read_latent(tmp_path / "rc" / "p.safetensors")
    assert rc.tensor.shape == (4, 2, 2) and (rc.meta.height, rc.meta.width, rc.meta.original_width) == (16, 16, 40)
    assert "resize 40x24->27x16" in rc.meta.size_handling and "center-crop 16x16" in rc.meta.size_handling


def test_roundtrip_of_a_gif_saves_a_gif_with_the_same_frames(tmp_path, capsys, cli_weights):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) for _ in range(3)]
    iio.mimsave(tmp_path / "a.gif", frames, duration=100, loop=0)
    code, out, err = run_main(capsys, "roundtrip", tmp_path / "a.gif", "-o", tmp_path / "rt", "--weights", cli_weights, "--device", "cpu", "--json", "--no-lpips")
    assert code == 0, err
    (r,) = json.loads(out)["results"]
    assert r["frames"] == 3 and r["output"].endswith("a.gif") and np.isfinite(r["psnr"])
    gif = Image.open(tmp_path / "rt" / "a.gif")
    assert gif.n_frames == 3 and gif.size == (24, 16) and gif.info["duration"] == 100
