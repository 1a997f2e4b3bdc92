"""Latents from others are untrusted: the config and weights path in their metadata cannot make decode
build huge models, load any file as weights, or pair weights with a config that is not theirs.

Each case is a real `vaecli decode` subprocess on a latent whose metadata was rewritten, with a
timeout that a build of minutes would hit (before the fix, num_res_blocks 200000 built modules for
minutes while its memory climbed past 3 GB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from tests.conftest import CLI_CONFIG
from vaecli.cli.app import main
from vaecli.config import LIMITS

DECODE_TIMEOUT = 60  # seconds: generous for a refusal (about 2 s), far below a minutes-long build


@pytest.fixture(scope="module")
def good_latent(tmp_path_factory, cli_weights) -> Path:
    """A real photograph encoded by the CLI with the self-describing tiny f8 model."""
    skimage_data = pytest.importorskip("skimage.data")
    folder = tmp_path_factory.mktemp("latents")
    photo = folder / "astronaut.png"
    Image.fromarray(np.ascontiguousarray(skimage_data.astronaut()[100:165, 180:237])).save(photo)  # 57x65, odd sizes
    with pytest.raises(SystemExit) as info:
        main(["encode", str(photo), "-o", str(folder / "enc"), "--weights", str(cli_weights), "--quiet"])
    assert info.value.code == 0
    (latent,) = (folder / "enc").glob("*.safetensors")
    return latent


def _rewritten(latent: Path, dest: Path, **changes: str) -> Path:
    """A copy of `latent` with metadata keys replaced, as someone could send it."""
    with safe_open(str(latent), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata())
    meta.update(changes)
    save_file(tensors, str(dest), metadata=meta)
    return dest


def _meta_of(latent: Path) -> dict[str, str]:
    with safe_open(str(latent), framework="pt") as f:
        return dict(f.metadata())


def _config(**changes) -> str:
    return json.dumps({**CLI_CONFIG.to_dict(), **changes})


@pytest.fixture(scope="module")
def decoded(tmp_path_factory, good_latent, cli_weights) -> dict:
    """One `vaecli decode` of a folder: the good latent beside one crafted latent per case."""
    folder = tmp_path_factory.mktemp("sent")
    notes = folder / "notes.txt"
    notes.write_text("any file on the machine\n")
    with safe_open(str(cli_weights), framework="pt") as f:
        plain = folder / "plain-weights.safetensors"  # weights without a config of their own
        save_file({k: f.get_tensor(k) for k in f.keys()}, str(plain))
    latents = folder / "latents"
    latents.mkdir()
    _rewritten(good_latent, latents / "good.safetensors")
    # The reproduction: num_res_blocks 200000 and a file that is no weights file at all.
    _rewritten(good_latent, latents / "huge.safetensors", config=_config(num_res_blocks=200000), weights=str(notes))
    _rewritten(good_latent, latents / "not-weights.safetensors", weights=str(notes))
    _rewritten(good_latent, latents / "other-config.safetensors", config=_config(num_res_blocks=4, name="claimed"))
    _rewritten(good_latent, latents / "plain-other.safetensors", config=_config(ch=64), weights=str(plain))
    # Recorded source sizes (65x57, no --resize) that the latent cannot have come from, and ones it can.
    _rewritten(good_latent, latents / "original-larger.safetensors", original_height="900")
    _rewritten(good_latent, latents / "original-smaller.safetensors", original_width="3")
    pre = json.loads(_meta_of(good_latent)["preprocess"])
    _rewritten(good_latent, latents / "resized-any.safetensors", original_height="900", original_width="3",
               preprocess=json.dumps({**pre, "resize": [57, 65]}))
    cropped = json.dumps({**pre, "center_crop": True})
    _rewritten(good_latent, latents / "cropped-ok.safetensors", original_height="72", original_width="57", preprocess=cropped)
    _rewritten(good_latent, latents / "cropped-too-much.safetensors", original_height="73", preprocess=cropped)
    with safe_open(str(good_latent), framework="pt") as f:  # valid metadata on a latent with an empty side
        empty = {k: f.get_tensor(k)[:, :0] for k in f.keys()}  # (C, 0, w)
        save_file(empty, str(latents / "empty.safetensors"), metadata=f.metadata())
    env = {k: v for k, v in os.environ.items() if k != "VAECLI_DEBUG"}
    out = folder / "out"
    p = subprocess.run(
        [sys.executable, "-m", "vaecli", "decode", str(latents), "-o", str(out), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=DECODE_TIMEOUT,
    )
    results = {Path(r["input"]).stem: r for r in json.loads(p.stdout)["results"]}
    return {"process": p, "results": results, "out": out}


def _error(decoded: dict, name: str) -> str:
    """The one-line error of a refused latent, which left no image behind."""
    result = decoded["results"][name]
    assert result["status"] == "failed", result
    error = result["error"]
    assert f"{name}.safetensors" in error and "\n" not in error
    assert not (decoded["out"] / f"{name}.png").exists()
    return error


def test_bad_latents_fail_alone_and_at_once(decoded):
    p = decoded["process"]
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert decoded["results"]["good"]["status"] == "ok"
    assert Image.open(decoded["out"] / "good.png").size == (57, 65)


def test_huge_config_naming_any_file_as_weights_is_refused(decoded):
    error = _error(decoded, "huge")
    assert "num_res_blocks=200000" in error and f"at most {LIMITS['num_res_blocks']}" in error


def test_a_file_that_is_no_weights_is_refused(decoded):
    assert "notes.txt: not a safetensors file" in _error(decoded, "not-weights")


def test_config_disagreeing_with_the_weights_own_is_refused_naming_both(decoded):
    error = _error(decoded, "other-config")
    assert "its own config (tiny-f8)" in error and "given with it (claimed)" in error
    assert "num_res_blocks 1 (tiny-f8) vs 4 (claimed)" in error


def test_config_disagreeing_with_plain_weights_is_refused(decoded):
    """Weights without a config of their own: their tensor shapes tell the architecture."""
    error = _error(decoded, "plain-other")
    assert "another architecture" in error and "ch 32 (file) vs 64 (config)" in error


def test_a_latent_with_an_empty_side_is_refused(decoded):
    """Before: a (C, 0, w) latent divided by zero while planning and aborted the whole run (exit 2)."""
    error = _error(decoded, "empty")
    assert "every dimension must be at least 1" in error and ", 0, " in error


def test_a_recorded_source_size_the_latent_cannot_hold_is_refused(decoded):
    """Before: original_height=900 on a latent of 65 content rows (no --resize) decoded as if nothing were wrong.
    Encode pads the bottom and right by less than the factor (8) and records the source's size, so without
    --resize it equals the content size; --center-crop alone crops less than the factor; --resize allows any."""
    error = _error(decoded, "original-larger")
    assert "original_height=900 does not fit the content size 65 that its latent of side 9 holds" in error
    assert "without --resize or --center-crop they are equal" in error
    assert "original_width=3 does not fit the content size 57 that its latent of side 8 holds" in _error(decoded, "original-smaller")
    assert "with --center-crop the source is at most 7 pixels larger" in _error(decoded, "cropped-too-much")
    for fine in ("resized-any", "cropped-ok"):
        assert decoded["results"][fine]["status"] == "ok", decoded["results"][fine]
