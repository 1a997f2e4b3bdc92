"""`vaecli encode` / `decode` on diffusers-layout weights equal diffusers' own AutoencoderKL (fp32, CPU),
with the model given by --weights/--config and by --model (registry name, weights in the cache)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

diffusers = pytest.importorskip("diffusers")

from vaecli.cli.app import main  # noqa: E402
from vaecli.io.latents import read_latent  # noqa: E402

SCALE = 0.3


@pytest.fixture(scope="module")
def diffusers_vae(tmp_path_factory):
    """A tiny random diffusers AutoencoderKL, its weights in diffusers layout, and our matching YAML."""
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=32,
        scaling_factor=SCALE,
    ).eval()
    with torch.no_grad():  # default init leaves norms at 1/0: perturb every tensor so each one matters
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    root = tmp_path_factory.mktemp("diffusers-vae")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(root / "tiny_diffusers_converted.safetensors"))
    (root / "tiny.yaml").write_text(
        f"ch: 32\nch_mult: [1, 2]\nnum_res_blocks: 1\nz_channels: 4\nembed_dim: 4\nscaling_factor: {SCALE}\nname: tiny-diffusers\n"
    )
    return ref, root / "tiny_diffusers_converted.safetensors", root / "tiny.yaml"


def _close(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-4) -> bool:
    return bool((got - want).abs().max() <= rel * want.abs().max())


def test_encode_equals_diffusers_mode_times_scaling_factor(tmp_path, capsys, diffusers_vae):
    ref, weights, config = diffusers_vae
    rng = np.random.default_rng(0)
    even = rng.integers(0, 256, (28, 40, 3), dtype=np.uint8)
    odd = rng.integers(0, 256, (27, 41, 3), dtype=np.uint8)  # padded by one row and column (reflect)
    Image.fromarray(even).save(tmp_path / "even.png")
    Image.fromarray(odd).save(tmp_path / "odd.png")
    args = ["encode", tmp_path / "even.png", tmp_path / "odd.png", "--weights", weights, "--config", config, "--device", "cpu", "-o", tmp_path / "lat"]
    p = subprocess.run([sys.executable, "-m", "vaecli", *map(str, args)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr

    for name, arr in (("even", even), ("odd", odd)):
        padded = np.pad(arr, ((0, arr.shape[0] % 2), (0, arr.shape[1] % 2), (0, 0)), mode="reflect")
        x = torch.from_numpy(padded).permute(2, 0, 1)[None].double().div(255).mul(2).sub(1).float()  # (1, 3, H, W)
        with torch.no_grad():
            want = ref.encode(x).latent_dist.mode() * ref.config.scaling_factor
        got = read_latent(tmp_path / "lat" / f"{name}.safetensors").tensor
        assert got.shape == want.shape[1:]
        assert _close(got, want[0]), (name, (got - want[0]).abs().max())

    # decode back: the PNG equals diffusers' decode of the unscaled latent, to 8-bit rounding
    with pytest.raises(SystemExit) as e:
        main(["decode", str(tmp_path / "lat" / "odd.safetensors"), "-o", str(tmp_path / "dec")])
    assert e.value.code == 0, capsys.readouterr().err
    z = read_latent(tmp_path / "lat" / "odd.safetensors").tensor[None] / SCALE
    with torch.no_grad():
        want = ((ref.decode(z).sample + 1) / 2).clamp(0, 1)[0, :, :27, :41]
    got = torch.from_numpy(np.array(Image.open(tmp_path / "dec" / "odd.png"))).permute(2, 0, 1).float() / 255
    assert got.shape == want.shape and (got - want).abs().max() <= 0.5 / 255 + 1e-4


def test_model_flag_loads_cached_registry_weights_and_applies_its_scale(tmp_path):
    """`--model sdxl-vae`: the full SDXL architecture, its weights found in the cache (random weights in
    diffusers layout here: no download in tests), latents = diffusers' mode() * 0.13025 (REFERENCE.md)."""
    from vaecli.config import shipped_config
    from vaecli.weights import registry
    from vaecli.weights.keymap import diffusers_vae_kwargs

    torch.manual_seed(1)
    ref = diffusers.AutoencoderKL(**diffusers_vae_kwargs(shipped_config("sdxl-vae"))).eval()
    cache = tmp_path / "cache"
    target = registry.cached_file("sdxl-vae", registry.get_entry("sdxl-vae").files[0], root=cache)
    target.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(target))
    arr = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "img.png")

    env = {**os.environ, "VAECLI_CACHE": str(cache)}
    args = ["encode", str(tmp_path / "img.png"), "--model", "sdxl-vae", "--device", "cpu", "-o", str(tmp_path / "lat")]
    p = subprocess.run([sys.executable, "-m", "vaecli", *args], capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr

    x = torch.from_numpy(arr).permute(2, 0, 1)[None].double().div(255).mul(2).sub(1).float()  # (1, 3, 40, 56)
    with torch.no_grad():
        want = ref.encode(x).latent_dist.mode()[0] * 0.13025
    latent = read_latent(tmp_path / "lat" / "img.safetensors")
    assert latent.tensor.shape == (4, 5, 7)
    assert _close(latent.tensor, want)
