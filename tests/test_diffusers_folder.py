"""`--model PATH/TO/DIFFUSERS_FOLDER`: diffusers' own save_pretrained folders, read by config.json, against
diffusers' AutoencoderKL (the independent reference) on a real photograph over 1024 px wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.reference_models import random_diffusers, to_pixels, wide_photo
from vaecli.api import load_vae
from vaecli.errors import ConfigError
from vaecli.io.latents import read_latent
from vaecli.weights.diffusers_config import load_diffusers_config

pytest.importorskip("diffusers")

REL_TOL = 1e-4  # fp32, different kernels: the gap measured here is about 1e-6 of the largest value
CASES = {
    "sd-like": dict(block_out_channels=(32, 64, 64, 64), layers_per_block=1, latent_channels=4, scaling_factor=0.18215),
    "sd3-like": dict(  # no quant convs, a shift factor, two resnets per level
        block_out_channels=(32, 64, 64, 64),
        layers_per_block=2,
        latent_channels=16,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=1.5305,
        shift_factor=0.0609,
    ),
    "no-mid-attention-16-groups": dict(
        block_out_channels=(32, 64), layers_per_block=1, latent_channels=4, mid_block_add_attention=False, norm_num_groups=16
    ),
}
DOWN = ("DownEncoderBlock2D",)
UP = ("UpDecoderBlock2D",)


def _kwargs(case: dict) -> dict:
    levels = len(case["block_out_channels"])
    return dict(down_block_types=DOWN * levels, up_block_types=UP * levels, **case)


def _save_folder(ref, folder, variant=None):
    ref.save_pretrained(folder, safe_serialization=True, variant=variant)
    return folder


def _close(got: torch.Tensor, want: torch.Tensor) -> bool:
    return bool((got - want).abs().max() <= REL_TOL * want.abs().max())


def _check_against_diffusers(vae, ref, photo: np.ndarray) -> None:
    x = to_pixels(photo)
    scale = ref.config.scaling_factor
    shift = ref.config.shift_factor or 0.0
    with torch.no_grad():
        want = (ref.encode(x).latent_dist.mode() - shift) * scale
        got = vae.scale_latents(vae.encode(x).mode())
        assert got.shape == want.shape and _close(got, want)
        part = want[..., :, :16]  # decoding is the costly half: a crop of the latent checks it as well
        assert _close(vae.decode(vae.unscale_latents(part)), ref.decode(part / scale + shift).sample)


@pytest.mark.parametrize("name", list(CASES))
def test_folder_loads_as_diffusers_computes(tmp_path, name):
    ref = random_diffusers(**_kwargs(CASES[name]))
    folder = _save_folder(ref, tmp_path / name)
    vae = load_vae(str(folder), device="cpu", dtype="fp32")
    assert vae.config.name == str(folder)
    _check_against_diffusers(vae, ref, wide_photo(104, 1024))


def test_fp16_variant_folder(tmp_path):
    """A folder holding only diffusion_pytorch_model.fp16.safetensors (as many hub repositories do)."""
    ref = random_diffusers(**_kwargs(CASES["sd-like"])).half()
    folder = _save_folder(ref, tmp_path / "fp16", variant="fp16")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "diffusion_pytorch_model.fp16.safetensors"]
    vae = load_vae(str(folder), device="cpu", dtype="fp32")
    _check_against_diffusers(vae, ref.float(), wide_photo(104, 1024))


def test_missing_keys_take_the_class_defaults_as_in_diffusers(tmp_path):
    """A config.json naming only widths and latent channels: diffusers fills 1 resnet per level and
    scaling_factor 0.18215 from AutoencoderKL's defaults; so must we."""
    import diffusers

    minimal = {"_class_name": "AutoencoderKL", "block_out_channels": [32, 64, 64], "down_block_types": list(DOWN * 3), "up_block_types": list(UP * 3)}
    ref = random_diffusers(**diffusers.AutoencoderKL.extract_init_dict(minimal)[0])
    folder = _save_folder(ref, tmp_path / "minimal")
    (folder / "config.json").write_text(json.dumps(minimal))
    cfg = load_diffusers_config(folder / "config.json")
    assert (cfg.scaling_factor, cfg.num_res_blocks, cfg.z_channels) == (ref.config.scaling_factor, ref.config.layers_per_block, 4)
    _check_against_diffusers(load_vae(str(folder), device="cpu", dtype="fp32"), ref, wide_photo(64, 1024))


def test_a_null_scaling_factor_means_no_scale_not_the_default(tmp_path):
    """diffusers keeps an explicit null as None (no default filled in); latents are then left unscaled and
    recorded so, with a warning, through the real CLI; a missing key still means 0.18215 (test above)."""
    import diffusers

    ref = random_diffusers(**_kwargs(CASES["sd-like"]))
    folder = _save_folder(ref, tmp_path / "null-scale")
    config = json.loads((folder / "config.json").read_text())
    config["scaling_factor"] = None
    (folder / "config.json").write_text(json.dumps(config))
    assert diffusers.AutoencoderKL.from_config(config).config.scaling_factor is None  # the reference's reading
    Image.fromarray(wide_photo(96, 1024)).save(tmp_path / "photo.png")  # no padding: the whole latent compares
    p = _cli("encode", "photo.png", "--model", folder, "--device", "cpu", "-o", "out", cwd=tmp_path)
    assert p.returncode == 0 and "scaling_factor is null" in p.stderr and "left unscaled" in p.stderr, p.stderr
    got = read_latent(tmp_path / "out" / "photo.safetensors")
    assert got.meta.scaling_factor is None and not got.meta.scaled
    with torch.no_grad():
        want = ref.encode(to_pixels(wide_photo(96, 1024))).latent_dist.mode()[0]  # unscaled, as diffusers' VAE gives it
    assert got.tensor.shape == want.shape and _close(got.tensor, want)


def _cli(*args, cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaecli", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd, env={**os.environ, **(env or {})})


def test_cli_model_folder_equals_weights_and_config(tmp_path):
    """Through the real CLI, from the folder's parent: `--model ./my-diffusers-folder` gives the latents
    `--weights FILE --config OUR.yaml` gives (same weights, a config written by hand), and decode needs no flags."""
    ref = random_diffusers(**_kwargs(CASES["sd-like"]))
    _save_folder(ref, tmp_path / "my-diffusers-folder")
    Image.fromarray(wide_photo(101, 1029)).save(tmp_path / "photo.png")  # odd sizes: padded by the CLI
    (tmp_path / "ours.yaml").write_text("ch: 32\nch_mult: [1, 2, 2, 2]\nnum_res_blocks: 1\nz_channels: 4\nembed_dim: 4\nscaling_factor: 0.18215\n")

    a = _cli("encode", "photo.png", "--model", "./my-diffusers-folder", "--device", "cpu", "-o", "by-folder", cwd=tmp_path)
    assert a.returncode == 0, a.stderr
    weights = "my-diffusers-folder/diffusion_pytorch_model.safetensors"
    b = _cli("encode", "photo.png", "--weights", weights, "--config", "ours.yaml", "--device", "cpu", "-o", "by-weights", cwd=tmp_path)
    assert b.returncode == 0, b.stderr
    got, want = read_latent(tmp_path / "by-folder" / "photo.safetensors"), read_latent(tmp_path / "by-weights" / "photo.safetensors")
    assert got.tensor.shape == (4, 13, 129) and (got.tensor - want.tensor).abs().max() <= 1e-6
    assert got.meta.scaled and got.meta.scaling_factor == 0.18215

    assert got.meta.model == str((tmp_path / "my-diffusers-folder").resolve())  # the folder, not the string typed

    elsewhere = tmp_path / "elsewhere"  # decode runs from another folder: the recorded model still names the folder
    elsewhere.mkdir()
    d = _cli("decode", tmp_path / "by-folder" / "photo.safetensors", "-o", tmp_path / "decoded", "--device", "cpu", cwd=elsewhere)
    assert d.returncode == 0, d.stderr
    assert Image.open(tmp_path / "decoded" / "photo.png").size == (1029, 101)


UNSUPPORTED = [
    ({"_class_name": "AutoencoderTiny"}, "AutoencoderTiny"),
    ({"_class_name": "AutoencoderKL", "use_quant_conv": True, "use_post_quant_conv": False}, "use_post_quant_conv"),
    ({"_class_name": "AutoencoderKL", "block_out_channels": [32, 48]}, "multiple of the first"),
    ({"_class_name": "AutoencoderKL", "act_fn": "gelu"}, "act_fn"),
    (["not", "an", "object"], "JSON object"),
]


def _bad_folder(root, config):
    folder = root / "bad"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"never read")
    return folder


@pytest.mark.parametrize("config, cause", UNSUPPORTED)
def test_unsupported_config_json_is_refused_naming_the_key(tmp_path, config, cause):
    with pytest.raises(ConfigError, match=cause) as err:
        load_vae(str(_bad_folder(tmp_path, config)), device="cpu")
    assert "config.json" in str(err.value) and "\n" not in str(err.value)


def test_unsupported_config_json_through_the_cli(tmp_path):
    """Exit code 2, one line on stderr, no traceback, no output."""
    folder = _bad_folder(tmp_path, UNSUPPORTED[0][0])
    Image.fromarray(wide_photo(40, 48)).save(tmp_path / "p.png")
    p = _cli("encode", "p.png", "--model", str(folder), "--device", "cpu", "-o", "out", cwd=tmp_path)
    assert p.returncode == 2 and "AutoencoderTiny" in p.stderr and "config.json" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_folder_without_weights_names_what_is_there(tmp_path):
    folder = tmp_path / "empty-vae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    (folder / "README.md").write_text("weights not downloaded\n")
    p = _cli("encode", "x.png", "--model", str(folder), "--device", "cpu", cwd=tmp_path)
    assert p.returncode == 2 and "no diffusion_pytorch_model.safetensors" in p.stderr and "README.md" in p.stderr


@pytest.mark.parametrize("force_upcast, asked, want", [(True, "auto", torch.float32), (False, "auto", torch.float16), (True, "fp16", torch.float16)])
def test_force_upcast_keeps_auto_dtype_off_float16(tmp_path, monkeypatch, force_upcast, asked, want):
    """Where "auto" would pick float16 (a GPU without bf16, MPS), a model diffusers marks force_upcast
    loads in float32, as diffusers' pipelines upcast it; an explicit fp16 is obeyed."""
    import vaecli.api

    ref = random_diffusers(**_kwargs(CASES["no-mid-attention-16-groups"]), force_upcast=force_upcast)
    folder = _save_folder(ref, tmp_path / "m")
    monkeypatch.setattr(vaecli.api, "resolve_dtype", lambda spec, device: torch.float16)  # what such a device resolves
    vae = load_vae(str(folder), device="cpu", dtype=asked)
    assert next(vae.parameters()).dtype == want
