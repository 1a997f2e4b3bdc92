"""Full single-file checkpoints (SD/SDXL/SD3/FLUX as ComfyUI and A1111 keep them): the VAE found by its prefix,
only its tensors read (peak memory measured in a subprocess), its architecture told by its tensor shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from tests.reference_models import random_diffusers, to_pixels, wide_photo
from vaecli.api import load_vae
from vaecli.config import VAEConfig, shipped_config
from vaecli.errors import CheckpointError
from vaecli.model import AutoencoderKL
from vaecli.weights.checkpoints import guess_config_from_weights
from vaecli.weights.keymap import diffusers_vae_kwargs

REPO = Path(__file__).resolve().parents[1]
TINY = VAEConfig(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, z_channels=4, embed_dim=4, scaling_factor=0.5)
# What a full SD checkpoint holds besides its VAE (names from SD 1.x, SDXL and FLUX single files).
OTHERS = {
    "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (1000, 64),
    "conditioner.embedders.1.model.ln_final.weight": (64,),
    "text_encoders.clip_l.transformer.text_model.final_layer_norm.bias": (64,),
}


def _random_model(config: VAEConfig, seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    model = AutoencoderKL(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _full_checkpoint(path: Path, vae_state: dict, prefix: str) -> Path:
    state = {f"{prefix}{k}": v.contiguous() for k, v in vae_state.items()}
    state.update({k: torch.randn(shape) for k, shape in OTHERS.items()})
    save_file(state, str(path))
    return path


@pytest.mark.parametrize("prefix", ["first_stage_model.", "vae."])
def test_vae_inside_a_full_checkpoint_loads_as_alone(tmp_path, prefix):
    model = _random_model(TINY)
    full = _full_checkpoint(tmp_path / "sd_full.safetensors", model.state_dict(), prefix)
    alone = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(alone))
    yaml = tmp_path / "tiny.yaml"
    yaml.write_text(json.dumps(TINY.to_dict()))  # JSON is YAML
    x = to_pixels(wide_photo(64, 1024))
    with torch.no_grad():
        got = load_vae(config=yaml, weights=full, device="cpu", dtype="fp32").encode(x).mode()
        want = load_vae(config=yaml, weights=alone, device="cpu", dtype="fp32").encode(x).mode()
    assert torch.equal(got, want)


def test_without_a_config_the_architecture_is_guessed_and_the_scale_left_unknown(tmp_path):
    model = _random_model(TINY)
    full = _full_checkpoint(tmp_path / "sd_full.safetensors", model.state_dict(), "first_stage_model.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vae = load_vae(weights=full, device="cpu", dtype="fp32")
    assert vae.config.architecture_differences(TINY.replace(resolution=256)) == []
    assert vae.config.scaling_factor is None
    [said] = [str(w.message) for w in caught if "latent scale is unknown" in str(w.message)]
    assert "GroupNorm group count cannot be read from shapes, so 32 is assumed" in said and "give --config" in said
    assert "norm_type affine" in said  # fixed statistics have GroupNorm's tensors: a guess cannot tell them apart
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in vae.state_dict().items())


def test_guess_names_the_shipped_configs_of_the_same_architecture(tmp_path):
    """Shapes cannot tell SD 1.x from SDXL: the warning names both, and --model picks the scale."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in AutoencoderKL(shipped_config("sdxl-vae")).state_dict().items()}
    path = tmp_path / "sdxl_like.safetensors"  # zeros: only the shapes matter here
    save_file({f"first_stage_model.{k}": torch.zeros(s) for k, s in shapes.items()}, str(path))
    with pytest.warns(UserWarning, match="sd-vae-ft-ema, sd-vae-ft-mse, sdxl-vae, sdxl-vae-fp16-fix"):
        load_vae(weights=path, device="cpu", dtype="fp32")
    assert load_vae("sdxl-vae", weights=path, device="cpu", dtype="fp32").config.scaling_factor == 0.13025


GUESS_CASES = {
    "sd-like": TINY,
    "flux-like": VAEConfig(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=2, z_channels=16),
    "kl-f16-like": VAEConfig(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, z_channels=8, embed_dim=8, attn_resolutions=(64,)),
    "no-mid-attention": VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=3, z_channels=4, attn_type="none"),
    "linear-attention": VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, attn_type="linear"),
    "flux2-like": VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, embed_dim=4, patch_size=(2, 2), batch_norm_eps=1e-4),
}


@pytest.mark.parametrize("name", list(GUESS_CASES))
def test_shapes_tell_the_architecture(tmp_path, name):
    from vaecli.model.flux2 import build_autoencoder

    config = GUESS_CASES[name].replace(resolution=256)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build_autoencoder(config).state_dict().items()}
    path = tmp_path / "w.safetensors"
    save_file({f"vae.{k}": torch.zeros(s) for k, s in shapes.items()}, str(path))
    assert guess_config_from_weights(path).architecture_differences(config) == []


def test_shapes_tell_the_architecture_of_a_diffusers_layout_file(tmp_path):
    pytest.importorskip("diffusers")
    config = GUESS_CASES["flux-like"].replace(resolution=256)
    ref = random_diffusers(**diffusers_vae_kwargs(config))
    path = tmp_path / "diffusers.safetensors"
    save_file({f"vae.{k}": v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    assert guess_config_from_weights(path).architecture_differences(config) == []


def test_a_file_without_a_vae_is_refused_in_one_line(tmp_path):
    unet = tmp_path / "unet_only.safetensors"
    save_file({k: torch.zeros(s) for k, s in OTHERS.items()}, str(unet))
    with pytest.raises(CheckpointError, match="cannot tell the VAE's architecture.*no encoder.conv_in.weight"):
        guess_config_from_weights(unet)
    Image.fromarray(wide_photo(40, 48)).save(tmp_path / "p.png")
    cmd = [sys.executable, "-m", "vaecli", "encode", "p.png", "--weights", str(unet), "--device", "cpu", "-o", "out"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 2 and "unet_only.safetensors" in p.stderr and "give --config or --model" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("second", ["vae.", ""])
def test_a_file_holding_two_vaes_is_refused_naming_both_prefixes(tmp_path, second):
    """first_stage_model. beside vae. (or beside bare VAE keys): which is meant cannot be told, so nothing is guessed."""
    state = {f"first_stage_model.{k}": v.contiguous() for k, v in _random_model(TINY, 0).state_dict().items()}
    state.update({f"{second}{k}": v.contiguous() for k, v in _random_model(TINY, 1).state_dict().items()})
    two = tmp_path / "two.safetensors"
    save_file(state, str(two))
    Image.fromarray(wide_photo(40, 48)).save(tmp_path / "p.png")
    for config in ((), ("--model", "sd-vae-ft-mse")):  # guessed or named architecture: refused the same
        cmd = [sys.executable, "-m", "vaecli", "encode", "p.png", "--weights", str(two), *config, "--device", "cpu", "-o", "out"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        place = "under vae." if second else "at the top level (no prefix)"
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert f"{two}: holds two VAEs, under first_stage_model. and {place}" in p.stderr and "--weights" in p.stderr
        assert not (tmp_path / "out").exists()


def test_full_size_vae_beside_1_gib_is_read_without_the_rest(tmp_path):
    """An SD-size VAE (float32, 319 MiB) under first_stage_model. beside 1 GiB of other tensors: loading it
    and encoding raises the process's RSS by less than the VAE's size plus 300 MB (measured in a child
    process, from just before the load); reading the whole file would add the gigabyte. Latents equal those
    of a model filled from the file by safetensors' own reader."""
    script = REPO / "scripts" / "measure_load_rss.py"
    full = tmp_path / "sd_xl_like_full.safetensors"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, str(script), "--make-single-file", str(full), "--filler-gib", "1"], check=True, env=env, timeout=300)
    assert full.stat().st_size > (1 << 30) + (300 << 20)
    p = subprocess.run([sys.executable, str(script), str(full), "--model", "sdxl-vae", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    rss = json.loads(p.stdout)
    assert rss["rise_after_use_mib"] < rss["vae_mib"] + 300, rss

    reference = AutoencoderKL(shipped_config("sdxl-vae")).eval()
    with safe_open(str(full), framework="pt") as f:
        prefix = "first_stage_model."
        reference.load_state_dict({k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)})
    x = to_pixels(wide_photo(64, 64))
    with torch.no_grad():
        got = load_vae("sdxl-vae", weights=full, device="cpu", dtype="fp32").encode(x).mode()
        assert torch.equal(got, reference.encode(x).mode())
