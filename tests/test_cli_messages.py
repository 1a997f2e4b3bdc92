"""What the commands say on stderr to a new user: once, on one line, never under --quiet/--json, and how to act on it."""

from __future__ import annotations

import pytest

from tests.clitools import noise_image, run_main, vaecli


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAECLI_CACHE", str(tmp_path / "cache"))  # LPIPS' weights are not there


def test_lpips_note_is_one_line_per_run_never_quiet_and_says_how_to_turn_it_off(tmp_path, capsys, cli_weights, empty_cache):
    for i in range(3):
        noise_image(tmp_path / "in" / f"{i}.png", 24, 16, i)
    code, out, err = run_main(capsys, "roundtrip", tmp_path / "in", "--weights", cli_weights)
    assert code == 0 and err.count("LPIPS skipped") == 1 and len(err.splitlines()) == 1
    assert "--no-lpips" in err and "vaecli fetch-weights vgg_lpips vgg16" in err
    for quiet in ("--quiet", "--json"):
        code, out, err = run_main(capsys, "roundtrip", tmp_path / "in", "--weights", cli_weights, quiet)
        assert code == 0 and err == "", (quiet, err)
    code, out, err = run_main(capsys, "roundtrip", tmp_path / "in", "--weights", cli_weights, "--no-lpips")
    assert code == 0 and err == ""


def test_a_name_with_a_newline_stays_on_one_line_in_the_table_and_the_error(tmp_path, cli_weights, empty_cache):
    """Through the real executable: the table row and the stderr line each name the file escaped, on one line."""
    good = noise_image(tmp_path / "in" / "bad\nname.png", 24, 16, 0)
    (tmp_path / "in" / "broken\nfile.png").write_bytes(b"not a png")
    p = vaecli("roundtrip", tmp_path / "in", "--weights", cli_weights, "--no-lpips", env={"COLUMNS": "200"})
    assert p.returncode == 1 and good.exists()
    (error,) = p.stderr.splitlines()
    assert error.startswith("failed: ") and "broken\\nfile.png" in error
    rows = [line for line in p.stdout.splitlines() if "name.png" in line or "file.png" in line]
    assert len(rows) == 2 and any("bad\\nname.png" in r and "ok" in r for r in rows) and any("broken\\nfile.png" in r and "failed" in r for r in rows)


@pytest.mark.parametrize("command", ["encode", "roundtrip"])
def test_same_stem_message_fits_every_command(tmp_path, capsys, cli_weights, empty_cache, command):
    noise_image(tmp_path / "x.png", 16, 16, 0)
    noise_image(tmp_path / "x.bmp", 16, 16, 1)
    code, out, err = run_main(capsys, command, tmp_path / "x.png", tmp_path / "x.bmp", "-o", tmp_path / "out", "--weights", cli_weights,
                              *(["--no-lpips"] if command == "roundtrip" else []))
    lines = err.splitlines()
    assert code == 1 and len(lines) == 2 and all("would also be written for" in line for line in lines)
    assert "encode" not in err  # no advice about one command inside another


def test_a_float_rgb_tiff_fails_naming_its_format(tmp_path, capsys, cli_weights):
    tifffile = pytest.importorskip("tifffile")  # comes with scikit-image, a test dependency
    from skimage import data

    tifffile.imwrite(tmp_path / "hdr.tif", (data.astronaut()[:40, :48] / 255.0).astype("float32"))
    noise_image(tmp_path / "ok.png", 16, 16, 0)
    code, out, err = run_main(capsys, "encode", tmp_path / "hdr.tif", tmp_path / "ok.png", "--weights", cli_weights, "-o", tmp_path / "lat")
    (line,) = err.splitlines()
    assert code == 1 and "hdr.tif" in line and "3 channel(s) of 32-bit float" in line and (tmp_path / "lat" / "ok.safetensors").is_file()


def test_fp16_on_a_cpu_is_said_once(tmp_path, capsys, cli_weights):
    for i in range(2):
        noise_image(tmp_path / "in" / f"{i}.png", 16, 16, i)
    code, out, err = run_main(capsys, "encode", tmp_path / "in", "--weights", cli_weights, "--device", "cpu", "--dtype", "fp16", "-o", tmp_path / "lat")
    assert code == 0 and err.count("--dtype fp16 on a CPU") == 1 and len(err.splitlines()) == 1 and "bf16" in err
    code, out, err = run_main(capsys, "decode", tmp_path / "lat", "--device", "cpu", "--dtype", "fp16", "-o", tmp_path / "dec")
    assert code == 0 and err.count("--dtype fp16 on a CPU") == 1
    code, out, err = run_main(capsys, "encode", tmp_path / "in", "--weights", cli_weights, "--device", "cpu", "--dtype", "bf16", "-o", tmp_path / "b")
    assert code == 0 and err == ""


@pytest.mark.parametrize("command", ["encode", "roundtrip"])
def test_a_resize_that_upscales_far_or_overflows_the_budget_is_said_once_before_the_run(tmp_path, capsys, cli_weights, empty_cache, command):
    for i in range(2):
        noise_image(tmp_path / "in" / f"small{i}.png", 24, 16, i)
    noise_image(tmp_path / "in" / "large.png", 200, 120, 2)
    extra = ["--no-lpips"] if command == "roundtrip" else []

    def run(*args):
        return run_main(capsys, command, tmp_path / "in", "--weights", cli_weights, "--device", "cpu", *extra, *args)

    code, out, err = run("--resize", "160", "-o", tmp_path / "up")
    (line,) = err.splitlines()
    assert code == 0 and line.startswith("Warning: --resize 160 upscales 2 of 3 input(s)") and "up to 10.0x: 24x16 -> 240x160" in line
    pixels = (2 * 240 * 160 + 267 * 160) / 1e6  # 200x120 scaled to a 160 short side is 267x160
    assert f"the model sees {pixels:.3g} megapixels, {pixels / (2 * 24 * 16 + 200 * 120) * 1e6:.2g}x the inputs' 0.0248 megapixels" in line
    assert "Ctrl-C" in line and "tiled" not in line

    code, out, err = run("--resize", "8", "-o", tmp_path / "down")  # shrinking is cheap: nothing to say
    assert code == 0 and err == ""

    code, out, err = run("--resize", "32", "--max-memory", "1MiB", "-o", tmp_path / "tight")
    (line,) = err.splitlines()  # 2x is not far, but the largest image overflows the budget
    assert code == 0 and "upscales" not in line and "the largest (53x32) needs about" in line and "runs tiled" in line


def test_the_resize_cost_reads_sizes_as_the_image_is_shown_exif_turned(tmp_path, capsys, cli_weights):
    """A phone photo stored 400x100 with EXIF orientation 6 is a 100x400 image: the cost is judged on that."""
    from PIL import Image

    from vaecli.io.images import image_size, read_image

    img = Image.new("RGB", (400, 100), (200, 90, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "turned.jpg", exif=exif.tobytes())
    assert image_size(tmp_path / "turned.jpg") == (100, 400) == tuple(read_image(tmp_path / "turned.jpg").shape[:0:-1])
    code, out, err = run_main(capsys, "encode", tmp_path / "turned.jpg", "--weights", cli_weights, "--resize", "100x400", "-o", tmp_path / "same")
    assert code == 0 and err == ""  # its own size: nothing is resized
    code, out, err = run_main(capsys, "encode", tmp_path / "turned.jpg", "--weights", cli_weights, "--resize", "400x100", "-o", tmp_path / "squeezed")
    assert code == 0 and "up to 4.0x: 100x400 -> 400x100" in err


def test_a_run_is_not_stopped_by_its_own_warnings_under_pythonwarnings_error(tmp_path, cli_weights):
    noise_image(tmp_path / "in" / "small.png", 24, 16, 0)
    p = vaecli("encode", tmp_path / "in", "--weights", cli_weights, "--resize", "160", "-o", tmp_path / "out", env={"PYTHONWARNINGS": "error"})
    assert p.returncode == 0, p.stderr
    assert p.stderr.startswith("Warning: --resize 160 upscales 1 of 1 input(s)") and len(p.stderr.splitlines()) == 1
    assert (tmp_path / "out" / "small.safetensors").is_file()


def test_compare_says_the_resize_cost_once_for_models_alike(tmp_path, capsys, cli_weights, empty_cache):
    noise_image(tmp_path / "in" / "small.png", 24, 16, 0)
    code, out, err = run_main(capsys, "compare", tmp_path / "in", "--model", cli_weights, "--model", cli_weights, "--resize", "160", "--no-lpips", "--json")
    assert code == 0 and err.count("Warning: --resize 160") == 1


@pytest.mark.parametrize("args, says", [
    (("encode",), "Missing argument 'INPUT...'"),
    (("encode", "x.png", "--bogus"), "No such option: --bogus"),
    (("encode", "x.png", "--batch-size", "abc"), "Invalid value for '--batch-size'"),
    (("roundtrip", "in", "--report", "mine.csv", "--no-lpips"), "Invalid value for --report: mine.csv: exists and is not a report vaecli wrote"),
    (("nosuch",), "No such command 'nosuch'"),
])
def test_usage_errors_are_one_line(tmp_path, args, says):
    """Click's four-line block (usage, hint, blank, error) as the one line the README promises, exit 2, through the real executable."""
    noise_image(tmp_path / "in" / "a.png", 24, 16, 0)
    (tmp_path / "mine.csv").write_text("my own table\n")
    p = vaecli(*args, cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and p.stderr.startswith(f"Error: {says}"), p.stderr
    assert "Usage:" not in p.stderr and "-h')" in p.stderr and (tmp_path / "mine.csv").read_text() == "my own table\n"


def test_help_is_still_help(tmp_path):
    """`vaecli` alone shows the help (exit 2, as before) and --help exits 0: neither is a usage error."""
    alone = vaecli(cwd=tmp_path)
    assert alone.returncode == 2 and "Usage: vaecli [OPTIONS] COMMAND" in alone.stdout + alone.stderr and "Error" not in alone.stderr
    asked = vaecli("encode", "--help", cwd=tmp_path)
    assert asked.returncode == 0 and "Usage: vaecli encode [OPTIONS] INPUT..." in asked.stdout


def test_normalize_with_no_scale_is_refused_before_any_work(tmp_path, capsys, cli_weights):
    noise_image(tmp_path / "a.png", 16, 16, 0)
    (tmp_path / "n.safetensors").write_bytes(b"never read")
    code, out, err = run_main(capsys, "encode", tmp_path / "a.png", "--weights", cli_weights, "--normalize", tmp_path / "n.safetensors",
                              "--no-scale", "-o", tmp_path / "lat")
    assert code == 2 and "--no-scale" in err and len(err.splitlines()) == 1 and not (tmp_path / "lat").exists()
