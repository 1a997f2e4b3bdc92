"""Every CPU path of vaecli on real photographs, against float64 and against diffusers fed NCHW tensors.

Why photographs: trained autoencoders turn smooth image regions into activations whose GroupNorm
groups have a large mean against their spread, where a one-pass variance (E[x^2] - E[x]^2, torch's
CPU kernel for channels_last input) cancels. Zero-mean noise cannot show that; it hid the error
the CLI test below measures on the old channels_last code. Sizes: 776x488 (odd, not square) and 1024x1024.

Models: the embedded default (real trained weights; no diffusers twin: its first level is wider
than conv_in) and a small SD-like model whose random weights have a trained model's GroupNorm
statistics (`trained_like`), with its diffusers twin.
"""

from __future__ import annotations

import copy
import functools
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from tests.reference_models import random_vaecli, to_pixels
from vaecli.api import load_vae
from vaecli.config import VAEConfig
from vaecli.io.latents import read_latent
from vaecli.model import AutoencoderKL
from vaecli.runtime.executor import Runner
from vaecli.runtime.memory import MemoryPolicy, estimate_memory
from vaecli.runtime.tiling import STORED_LIVE, tiled_decode, tiled_encode

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint  # noqa: E402

from vaecli.weights.checkpoints import save_weights  # noqa: E402
from vaecli.weights.keymap import diffusers_vae_kwargs  # noqa: E402

REL_TOL = 1e-4  # latents and pixels, relative to the reference's largest magnitude
PIXEL_TOL = 2 / 255  # decoded pixels in [0, 1]

# SD's architecture (4 levels, 32 groups, mid attention, quant convs), narrower and shallower to stay cheap
SD_LIKE = VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, z_channels=4, embed_dim=4, scaling_factor=0.18215, name="sd-like")


def trained_like(config: VAEConfig, seed: int = 0) -> AutoencoderKL:
    """Random weights with what a trained model has and a fresh one lacks: GroupNorm affines that put
    out a large positive offset with a small spread (Swish then passes smooth regions as a near
    constant) and conv biases of order one, so the groups after each conv sit far from zero."""
    return random_vaecli(config, norm_weight=(0.05, 0.2), norm_bias=(2.0, 0.5), conv_bias_std=2.0, seed=seed)


def diffusers_twin(vae: AutoencoderKL):
    """diffusers' AutoencoderKL holding `vae`'s weights, read by diffusers' own ldm converter."""
    ref = diffusers.AutoencoderKL(**diffusers_vae_kwargs(vae.config)).eval()
    ckpt = {f"first_stage_model.{k}": v.clone() for k, v in vae.state_dict().items()}
    ref.load_state_dict(convert_ldm_vae_checkpoint(ckpt, dict(ref.config)), strict=True)
    return ref


@functools.cache
def photo_uint8(name: str, height: int, width: int) -> np.ndarray:
    """A scikit-image photograph at (height, width), uint8 (H, W, 3): resized (Lanczos) if smaller
    than asked, else a crop around the centre of its real pixels."""
    a = getattr(skimage.data, name)()[..., :3]
    if a.shape[0] < height or a.shape[1] < width:
        return np.array(Image.fromarray(a).resize((width, height), Image.Resampling.LANCZOS))
    r0, c0 = (a.shape[0] - height) // 2, (a.shape[1] - width) // 2
    return a[r0 : r0 + height, c0 : c0 + width].copy()


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).abs().max() / want.double().abs().max())


def pixel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest difference of decoded pixels mapped to [0, 1]."""
    return float((got.double() - want.double()).abs().max() / 2)


class Case:
    """A model, a photo, and the references: float64 (a deep copy run in NCHW) and diffusers (NCHW)."""

    def __init__(self, vae: AutoencoderKL, x: torch.Tensor, with_diffusers: bool):
        self.vae, self.x = vae, x
        ref64 = copy.deepcopy(vae).double()
        with torch.inference_mode():
            self.mean64 = ref64.encode(x.double()).mean
            self.z = self.mean64.float()  # every path decodes the same latent
            self.pixels64 = ref64.decode(self.z.double())
            self.twin = diffusers_twin(vae) if with_diffusers else None
            self.diffusers = None
            if self.twin is not None:
                self.diffusers = (self.twin.encode(x).latent_dist.mean, self.twin.decode(self.z).sample)

    def check(self, mean: torch.Tensor, pixels: torch.Tensor) -> None:
        refs = [("float64", self.mean64, self.pixels64)]
        if self.diffusers is not None:
            refs.append(("diffusers", *self.diffusers))
        for name, want_mean, want_pixels in refs:
            assert mean.shape == want_mean.shape and pixels.shape == want_pixels.shape
            assert rel_err(mean, want_mean) < REL_TOL, (name, rel_err(mean, want_mean))
            assert rel_err(pixels, want_pixels) < REL_TOL, (name, rel_err(pixels, want_pixels))
            assert pixel_err(pixels, want_pixels) <= PIXEL_TOL, (name, pixel_err(pixels, want_pixels) * 255)


@pytest.fixture(scope="module")
def coffee_776() -> torch.Tensor:
    """scikit-image's `coffee` (400x600) resized to 776x488: an odd, non-square size."""
    return to_pixels(photo_uint8("coffee", 488, 776))


@pytest.fixture(scope="module")
def retina_1024() -> torch.Tensor:
    """The central 1024x1024 of scikit-image's `retina` (1411x1411), its own pixels."""
    return to_pixels(photo_uint8("retina", 1024, 1024))


@pytest.fixture(scope="module")
def sd_like_776(coffee_776) -> Case:
    return Case(trained_like(SD_LIKE), coffee_776, with_diffusers=True)


def _untiled(vae, x, z):
    return vae.encode(x).mean, vae.decode(z)


def _channels_last_input(vae, x, z):
    """The caller's tensors in channels_last: the layout must not change the numbers."""
    cl = torch.channels_last
    return vae.encode(x.contiguous(memory_format=cl)).mean, vae.decode(z.contiguous(memory_format=cl))


def _batched(vae, x, z):
    """A batch of two: the photo and a darker mirror image; sample 0 must not see sample 1's statistics."""
    mean = vae.encode(torch.cat([x, x.flip(-1) * 0.5])).mean[:1]
    return mean, vae.decode(torch.cat([z, z.flip(-1) * 0.5]))[:1]


def _runner_tiled(vae, x, z):
    """What the commands run when the untiled pass is estimated over `--max-memory`: tiled at the
    CPU default tile size, every activation stored (the budget is just under the estimate)."""
    def runner(mode, t):
        return Runner(vae, MemoryPolicy(max_memory=estimate_memory(vae, t.shape, t.dtype, mode) - 1))

    return runner("encode", x).encode(x).mean, runner("decode", z).decode(z)


def _tiled_recomputed(vae, x, z):
    """Tiled with the full-resolution activations over the storage budget, so recomputed tile by tile
    from the last stored one (as for an 8192x8192 decode); the half-resolution ones are stored."""
    h, w = x.shape[-2:]
    level1 = vae.config.ch * vae.config.ch_mult[1] * (h // 2) * (w // 2) * x.element_size()  # bytes
    budget = STORED_LIVE * 2 * level1  # level 1 (and a 2x wider one) fits, level 0 does not
    return tiled_encode(vae, x, 256, storage_budget=budget).mean, tiled_decode(vae, z, 256, storage_budget=budget)


@pytest.mark.parametrize("path", [_untiled, _channels_last_input, _batched, _runner_tiled, _tiled_recomputed], ids=lambda p: p.__name__[1:])
def test_sd_like_776x488_every_path(sd_like_776, path):
    with torch.inference_mode():
        sd_like_776.check(*path(sd_like_776.vae, sd_like_776.x, sd_like_776.z))


def test_sd_like_1024x1024(retina_1024):
    """At 1024x1024 the whole-image pass (the tiled ones are checked above; each 1024x1024 pass in
    float64 takes seconds and gigabytes: torch's float64 conv unfolds its whole input)."""
    case = Case(trained_like(SD_LIKE), retina_1024, with_diffusers=True)
    with torch.inference_mode():
        case.check(*_untiled(case.vae, case.x, case.z))


def test_default_model_776x488(coffee_776):
    """The embedded default model: real trained weights (no diffusers twin: its first level is wider than conv_in)."""
    case = Case(load_vae(device="cpu", dtype="fp32"), coffee_776, with_diffusers=False)
    with torch.inference_mode():
        case.check(*_untiled(case.vae, case.x, case.z))


def _vaecli(*args) -> None:
    p = subprocess.run([sys.executable, "-m", "vaecli", *map(str, args)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr


def test_cli_encode_and_decode_of_a_776x488_photo_match_diffusers(tmp_path, sd_like_776):
    """The reported failure, through the real CLI: `vaecli encode --device cpu --dtype fp32` of a
    776x488 photograph, then `decode`, against diffusers fed NCHW. On the channels_last code this
    model's latents were 1.4e-4 relative from diffusers (measured), failing the first assert."""
    weights = tmp_path / "sd-like.safetensors"
    save_weights(sd_like_776.vae, weights)
    Image.fromarray(photo_uint8("coffee", 488, 776)).save(tmp_path / "photo.png")
    _vaecli("encode", tmp_path / "photo.png", "--weights", weights, "--device", "cpu", "--dtype", "fp32", "-o", tmp_path / "lat", "--quiet")
    latent = read_latent(tmp_path / "lat" / "photo.safetensors").tensor  # (C, h, w), scaled
    scale = SD_LIKE.scaling_factor
    assert rel_err(latent, sd_like_776.diffusers[0][0] * scale) < REL_TOL

    _vaecli("decode", tmp_path / "lat" / "photo.safetensors", "--device", "cpu", "--dtype", "fp32", "-o", tmp_path / "dec", "--quiet")
    got = torch.from_numpy(np.array(Image.open(tmp_path / "dec" / "photo.png"))).permute(2, 0, 1).double() / 255  # (3, H, W)
    with torch.inference_mode():
        want = ((sd_like_776.twin.decode(latent[None] / scale).sample[0].double() + 1) / 2).clamp(0, 1)
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= PIXEL_TOL  # 8-bit rounding included
