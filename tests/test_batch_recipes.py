"""Stale outputs, seeds and reporting: the issue's freshness defects and small ones, each through the real CLI."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from tests.clitools import by_name, noise_image, run_json, run_main
from vaecli.io import images
from vaecli.io.latents import read_latent
from vaecli.io.provenance import PROVENANCE_KEY, provenance_text, read_provenance
from vaecli.model import AutoencoderKL
from vaecli.weights.checkpoints import config_from_weights, save_weights


def _statuses(doc):
    return [r["status"] for r in doc["results"]]


def test_weights_replaced_in_place_make_every_latent_stale(tmp_path, capsys, cli_weights):
    """A fine-tune saved over the same weights path: the next run redoes every latent instead of skipping them."""
    weights = tmp_path / "vae.safetensors"
    weights.write_bytes(cli_weights.read_bytes())
    noise_image(tmp_path / "in" / "a.png", 24, 24, 0)
    args = ["encode", tmp_path / "in", "-o", tmp_path / "lat", "--weights", weights, "--device", "cpu"]
    assert _statuses(run_json(capsys, *args)[1]) == ["ok"]
    first = read_latent(tmp_path / "lat" / "a.safetensors").tensor
    assert _statuses(run_json(capsys, *args)[1]) == ["skipped"]
    save_weights(AutoencoderKL(_config(cli_weights)).eval(), weights)  # same path, new weights
    assert _statuses(run_json(capsys, *args)[1]) == ["ok"]
    assert not torch.equal(read_latent(tmp_path / "lat" / "a.safetensors").tensor, first)


def _config(weights):
    """The architecture of `weights`, with the global seed set for the new weights about to be drawn."""
    torch.manual_seed(123)
    return config_from_weights(weights)


def test_an_image_changed_while_it_was_read_is_redone_next_time(tmp_path, capsys, cli_weights, monkeypatch):
    src = noise_image(tmp_path / "in" / "a.png", 24, 24, 0)
    real_open = images.open_image

    def open_then_change(path):  # another program rewrites the file just after vaecli read its pixels
        img = real_open(path)
        noise_image(src, 24, 24, 99)
        return img

    args = ["encode", src, "-o", tmp_path / "lat", "--weights", cli_weights, "--device", "cpu"]
    monkeypatch.setattr(images, "open_image", open_then_change)
    assert _statuses(run_json(capsys, *args)[1]) == ["ok"]
    monkeypatch.undo()
    assert _statuses(run_json(capsys, *args)[1]) == ["ok"]  # the latent holds the old pixels: not up to date
    assert _statuses(run_json(capsys, *args)[1]) == ["skipped"]


def test_decode_redoes_what_another_format_scaling_or_model_would_change(tmp_path, capsys, cli_weights):
    noise_image(tmp_path / "in" / "a.png", 24, 16, 0)
    assert run_main(capsys, "encode", tmp_path / "in", "-o", tmp_path / "lat", "--weights", cli_weights, "--device", "cpu", "--quiet")[0] == 0
    other = tmp_path / "other.safetensors"
    save_weights(AutoencoderKL(_config(cli_weights)).eval(), other)
    dec = ["decode", tmp_path / "lat", "-o", tmp_path / "dec"]
    for extra, want in [((), "ok"), ((), "skipped"), (("--unscaled",), "ok"), (("--unscaled",), "skipped"),
                        (("--weights", other), "ok"), (("--weights", other), "skipped"), ((), "ok"),
                        (("--format", "jpg"), "ok"), (("--format", "jpg"), "skipped"), (("--format", "webp"), "ok"),
                        (("--format", "tiff"), "ok"), (("--format", "tiff"), "skipped")]:
        code, doc, err = run_json(capsys, *dec, *extra)
        assert (code, _statuses(doc)) == (0, [want]), (extra, err)
    assert sorted(p.name for p in (tmp_path / "dec").iterdir()) == ["a.jpg", "a.png", "a.tiff", "a.webp"]
    assert {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "dec").iterdir()} == {oct(0o666 & ~_umask())}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_roundtrip_has_overwrite_and_does_not_rewrite_fresh_outputs(tmp_path, capsys, cli_weights):
    noise_image(tmp_path / "in" / "a.png", 24, 24, 0)
    rt = ["roundtrip", tmp_path / "in", "-o", tmp_path / "rt", "--weights", cli_weights, "--device", "cpu", "--no-lpips", "--compare"]
    code, first, _ = run_json(capsys, *rt)
    assert code == 0 and _statuses(first) == ["ok"]
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "rt").iterdir()}
    code, again, _ = run_json(capsys, *rt)
    assert _statuses(again) == ["skipped"] and again["results"][0]["psnr"] == first["results"][0]["psnr"]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "rt").iterdir()} == stamps
    assert again["summary"]["mean_psnr"] == first["summary"]["mean_psnr"]
    code, forced, _ = run_json(capsys, *rt, "--overwrite")
    assert _statuses(forced) == ["ok"] and forced["results"][0]["psnr"] == pytest.approx(first["results"][0]["psnr"])
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "rt").iterdir()} != stamps
    code, resized, _ = run_json(capsys, *rt, "--resize", "16")  # another option: measured and written again
    assert _statuses(resized) == ["ok"] and Image.open(tmp_path / "rt" / "a.png").size == (16, 16)


def test_sample_seeds_differ_between_folders_and_record_the_given_seed(tmp_path, capsys, cli_weights):
    for animal in ("cats", "dogs"):
        noise_image(tmp_path / animal / "0001.png", 16, 16, 0)  # the same pixels, the same name
    code, doc, _ = run_json(capsys, "encode", tmp_path / "cats", tmp_path / "dogs", "--sample", "--seed", "7", "--weights", cli_weights)
    assert code == 0
    cat, dog = (read_latent(tmp_path / a / "0001.safetensors") for a in ("cats", "dogs"))
    assert cat.meta.seed == dog.meta.seed == 7 and cat.meta.sample_seed != dog.meta.sample_seed
    assert not torch.equal(cat.tensor, dog.tensor)


def test_a_tiny_image_does_not_null_the_mean_ssim(tmp_path, capsys, cli_weights):
    noise_image(tmp_path / "in" / "big.png", 32, 32, 0)
    noise_image(tmp_path / "in" / "tiny.png", 8, 8, 1)  # under SSIM's 11-pixel window
    code, doc, _ = run_json(capsys, "roundtrip", tmp_path / "in", "--weights", cli_weights, "--no-lpips")
    res = by_name(doc)
    assert code == 0 and res["tiny.png"]["ssim"] is None
    assert doc["summary"]["mean_ssim"] == pytest.approx(res["big.png"]["ssim"]) and doc["summary"]["ssim_count"] == 1


def test_nothing_to_do_is_a_warning_and_exit_2(tmp_path, capsys, cli_weights):
    (tmp_path / "empty").mkdir()
    code, out, err = run_main(capsys, "encode", tmp_path / "empty", "--weights", cli_weights)
    assert code == 2 and "empty: nothing to do in this folder" in err and "nothing to encode" in err
    code, out, err = run_main(capsys, "encode", str(tmp_path / "*.png"), "--weights", cli_weights)
    assert code == 2 and "matches no" in err
    noise_image(tmp_path / "a.png", 16, 16, 0)
    code, out, err = run_main(capsys, "encode", tmp_path / "empty", tmp_path / "a.png", "--weights", cli_weights)
    assert code == 0 and "Warning:" in err and "encoded 1 ok" in out


def test_control_characters_in_names_are_escaped_in_the_table_and_errors(tmp_path, capsys, cli_weights, monkeypatch):
    folder = tmp_path / "in"
    noise_image(folder / "good\tone.png", 16, 16, 0)
    (folder / "bad\nname.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    monkeypatch.setenv("COLUMNS", "400")  # the table's width: long paths on one line
    code, out, err = run_main(capsys, "roundtrip", folder, "--weights", cli_weights, "--device", "cpu", "--no-lpips")
    assert code == 1
    (line,) = [x for x in err.splitlines() if x.startswith("failed:")]
    assert "bad\\nname.png" in line and "name.png" not in err.replace(line, "")  # one line, the name escaped
    assert "bad\\nname.png" in out and "good\\tone.png" in out


@pytest.mark.parametrize("key, value", [("scaling_factor", "0"), ("scaling_factor", "nan"), ("height", "-4"), ("width", "0")])
def test_a_latent_with_a_bad_metadata_field_fails_alone_naming_it(tmp_path, capsys, cli_weights, key, value):
    noise_image(tmp_path / "in" / "a.png", 24, 16, 0)
    noise_image(tmp_path / "in" / "b.png", 24, 16, 1)
    assert run_main(capsys, "encode", tmp_path / "in", "-o", tmp_path / "lat", "--weights", cli_weights, "--quiet")[0] == 0
    lat = read_latent(tmp_path / "lat" / "a.safetensors")
    save_file({"latent": lat.tensor}, str(tmp_path / "lat" / "a.safetensors"), metadata=lat.meta.to_strings() | {key: value})
    code, doc, err = run_json(capsys, "decode", tmp_path / "lat", "-o", tmp_path / "dec")
    res = by_name(doc)
    assert code == 1 and res["b.safetensors"]["status"] == "ok" and res["a.safetensors"]["status"] == "failed"
    assert f"a.safetensors: latent metadata field {key}=" in err and not (tmp_path / "dec" / "a.png").exists()
    assert np.asarray(Image.open(tmp_path / "dec" / "b.png")).shape == (16, 24, 3)


def test_a_skipped_result_reports_only_the_result_fields_its_output_records(tmp_path, capsys, cli_weights):
    """An up-to-date latent whose document also records report fields (another vaecli version, an edit):
    the skipped result keeps its own input, status and error (it was a TypeError: "internal error", exit 2)."""
    src = noise_image(tmp_path / "in" / "a.png", 24, 16, 0)
    args = ["encode", src, "-o", tmp_path / "lat", "--weights", cli_weights, "--device", "cpu"]
    assert run_main(capsys, *args, "--quiet")[0] == 0
    path = tmp_path / "lat" / "a.safetensors"
    with safe_open(str(path), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    doc = read_provenance(path)
    doc["results"] |= {"input": "/elsewhere.png", "status": "failed", "error": "recorded", "note": "x"}
    save_file(tensors, str(path), metadata=meta | {PROVENANCE_KEY: provenance_text(doc)})
    code, report, err = run_json(capsys, *args)
    assert code == 0 and "internal error" not in err
    assert report["results"] == [{"input": str(src), "output": str(path), "status": "skipped", "error": None, "shape": [4, 2, 3]}]
