"""The GPU path, run for real: skipped without CUDA, run on a lent GPU by scripts/gpu_check.sh.

References are independent of the path under test: the same weights in float64 on the CPU (NCHW), and
the fp32 CUDA result for the reduced-precision runs. Inputs are real photographs (samples/), not noise:
their GroupNorm groups have large means, which zero-mean noise hides.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaecli.runtime.executor import Runner
from vaecli.runtime.memory import MemoryPolicy
from vaecli.runtime.tiling import tiled_decode, tiled_encode

# VAECLI_CUDA_TESTS_DEVICE=cpu rehearses these tests on a CPU (scripts/gpu_check.sh --rehearse), so that on
# the lent GPU nothing but CUDA itself can fail.
DEVICE = os.environ.get("VAECLI_CUDA_TESTS_DEVICE", "cuda")
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs CUDA")]

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"


def photo(size: int | None = None) -> torch.Tensor:
    """samples/astronaut.jpg (a real photograph) as (1, 3, H, W) in [-1, 1], optionally resized."""
    from vaecli.io.images import read_image

    x = read_image(SAMPLES / "astronaut.jpg")[None]  # (1, 3, 512, 512) in [0, 1]
    if size is not None:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)
    return x * 2 - 1


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the reference's scale."""
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).abs().max() / b.abs().max()).item()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two images in [-1, 1] (peak-to-peak 2)."""
    mse = ((a.double().cpu().clamp(-1, 1) - b.double().cpu().clamp(-1, 1)) ** 2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(4 / mse)


@pytest.fixture(scope="module")
def sd_like():
    """A random SD-like VAE (4 levels, 32 groups, mid attention) with non-trivial GroupNorm affines."""
    from reference_models import random_vaecli

    from vaecli.config import VAEConfig

    cfg = VAEConfig(ch=64, ch_mult=(1, 2, 2, 4), num_res_blocks=1, z_channels=4, embed_dim=4)
    return random_vaecli(cfg, norm_weight=(0.5, 1.5), norm_bias=(0.0, 0.3), conv_bias_std=0.05)


def on(vae, device, dtype):
    return copy.deepcopy(vae).to(device, dtype).eval()


@pytest.mark.parametrize("which", ["default", "sd_like"])
def test_fp32_cuda_equals_the_cpu_float64_reference_on_a_photograph(which, sd_like):
    from vaecli.api import load_vae

    vae = load_vae(device="cpu", dtype="fp32") if which == "default" else sd_like
    x = photo()
    ref = on(vae, "cpu", torch.float64)
    with torch.no_grad():
        mean64 = ref.encode(x.double()).mean
        pix64 = ref.decode(mean64)
    runner = Runner(on(vae, DEVICE, torch.float32))
    mean = runner.encode(x).mean
    pix = runner.decode(mean64.float())
    assert rel(mean, mean64) < 1e-4
    assert rel(pix, pix64) < 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_reconstructions_are_within_40db_of_fp32(dtype):
    from vaecli.api import load_vae

    vae = load_vae(device="cpu", dtype="fp32")
    x = photo()
    full = Runner(on(vae, DEVICE, torch.float32))
    half = Runner(on(vae, DEVICE, dtype))
    rec32 = full.decode(full.encode(x).mode())
    rec = half.decode(half.encode(x).mode())
    assert psnr(rec, rec32) >= 40


def test_tiled_equals_untiled_on_cuda(sd_like):
    vae = on(sd_like, DEVICE, torch.float32)
    x = photo(384).to(DEVICE)
    roomy = Runner(vae, MemoryPolicy(max_memory=2**40))  # untiled, and fp32 made exact (no TF32) as the CLI runs it
    mean = roomy.encode(x).mean
    pix = roomy.decode(mean)
    with torch.no_grad():
        mean_t = tiled_encode(vae, x, tile_size=128).mean
        pix_t = tiled_decode(vae, mean, tile_size=128)
    assert rel(mean_t, mean) < 1e-4
    assert rel(pix_t, pix) < 1e-4
    bf = on(sd_like, DEVICE, torch.bfloat16)
    with torch.no_grad():
        pb = bf.decode(mean.bfloat16())
        pb_t = tiled_decode(bf, mean.bfloat16(), tile_size=128)
    assert psnr(pb_t.float(), pb.float()) >= 40


def test_a_tiny_max_memory_still_gives_the_untiled_result(sd_like):
    vae = on(sd_like, DEVICE, torch.float32)
    x = photo(384)
    roomy = Runner(vae).encode(x).mean
    tight = Runner(vae, MemoryPolicy(max_memory=64 * 2**20)).encode(x).mean
    assert rel(tight, roomy) < 1e-4


def test_a_forced_out_of_memory_error_retries_tiled(sd_like):
    """torch.cuda.OutOfMemoryError raised by the untiled pass (as a real one is): the Runner frees the cache and
    gives the tiled result, equal to the untiled one."""
    vae = on(sd_like, DEVICE, torch.float32)
    runner = Runner(vae, MemoryPolicy(max_memory=2**40))  # roomy: the untiled pass is tried first
    z = runner.encode(photo(256).to(DEVICE)).mean
    want = runner.decode(z)
    tried = []

    def out_of_memory(module, args):
        tried.append(module)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    hook = vae.decoder.register_forward_pre_hook(out_of_memory)
    try:
        got = runner.decode(z)
    finally:
        hook.remove()
    assert len(tried) == 1  # one untiled attempt, then the tiled pass (which never calls decoder.forward)
    assert rel(got, want) < 1e-4


def test_fp16_overflow_falls_back_to_fp32(sd_like):
    vae = on(sd_like, DEVICE, torch.float16)
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(3e4)  # activations past fp16's 65504: inf/NaN in half precision
    z = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    out = Runner(vae).decode(z)
    assert torch.isfinite(out).all()


def test_cli_roundtrip_on_cuda(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "vaecli"]
    enc = subprocess.run([*args, "encode", str(SAMPLES), "-o", str(tmp_path / "lat"), "--device", DEVICE, "--json"], env=env, capture_output=True, text=True)
    assert enc.returncode == 0, enc.stderr
    dec = subprocess.run([*args, "decode", str(tmp_path / "lat"), "-o", str(tmp_path / "rec"), "--device", DEVICE, "--json"], env=env, capture_output=True, text=True)
    assert dec.returncode == 0, dec.stderr
    assert len(list((tmp_path / "rec").rglob("*.png"))) == 3
    rt = subprocess.run([*args, "roundtrip", str(SAMPLES), "--device", DEVICE, "--json"], env=env, capture_output=True, text=True)
    assert rt.returncode == 0, rt.stderr
    import json

    summary = json.loads(rt.stdout)["summary"]
    assert summary["mean_psnr"] > 28, summary
