"""Exact tiling: tiled encode/decode equal the whole-image pass; automatic tiling and the OOM fallback."""

from __future__ import annotations

import math

import pytest
import torch

from tests.reference_models import random_vaecli
from vaecli.config import VAEConfig
from vaecli.model import AutoencoderKL
from vaecli.runtime import tiling
from vaecli.runtime.executor import Runner
from vaecli.runtime.memory import (
    MemoryPolicy,
    estimate_memory,
    is_out_of_memory,
    memory_budget,
)
from vaecli.runtime.tiling import tiled_decode, tiled_encode

# Three levels (factor 4), GroupNorm everywhere, mid attention; the second one adds per-level
# attention (as kl-f16/f32 have) and drops the quant convs (as SD3/FLUX do).
CONFIGS = {
    "quant": VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=4, embed_dim=4),
    "level-attn": VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=4, attn_resolutions=(64,), resolution=128),
    # the embedded default model's geometry: 8 wide GroupNorm groups, no attention, no quant convs
    "groups-8": VAEConfig(ch=32, ch_mult=(2, 1, 2), num_res_blocks=1, z_channels=8, norm_num_groups=8, attn_type="none"),
    # the same with the decoder's norms fixed (norm_type: affine): no statistics for the tiler to gather
    "affine": VAEConfig(ch=32, ch_mult=(2, 1, 2), num_res_blocks=1, z_channels=8, norm_num_groups=8, attn_type="none", norm_type="affine"),
}


def _model(cfg: VAEConfig) -> AutoencoderKL:
    """Random weights with non-trivial GroupNorm affines, so wrong statistics show up in the output."""
    return random_vaecli(cfg, norm_weight=(0.5, 1.5), norm_bias=(0.0, 0.3))


@pytest.fixture(scope="module", params=["quant", "groups-8", "affine"])
def vae(request) -> AutoencoderKL:
    return _model(CONFIGS[request.param])


@pytest.fixture(scope="module")
def vae_level_attn() -> AutoencoderKL:
    return _model(CONFIGS["level-attn"])


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


# (height, width, tile side in pixels): square multiples, non-multiples of the tile and of the
# downsample factor, non-square, a tile bigger than the image.
SIZES = [(64, 64, 32), (37, 53, 16), (40, 72, 24), (24, 24, 512)]


@pytest.mark.parametrize("height,width,tile", SIZES)
def test_tiled_encode_equals_untiled(vae, height, width, tile):
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height)) * 2 - 1
    with torch.inference_mode():
        want = vae.encode(x)
        got = tiled_encode(vae, x, tile)
    assert got.parameters.shape == want.parameters.shape
    assert _rel_err(got.mean, want.mean) < 1e-5
    assert _rel_err(got.logvar, want.logvar) < 1e-5


@pytest.mark.parametrize("height,width,tile", SIZES)
def test_tiled_decode_equals_untiled(vae, height, width, tile):
    z = torch.randn(1, vae.latent_channels, height // 4, width // 4, generator=torch.Generator().manual_seed(width))
    with torch.inference_mode():
        want = vae.decode(z)
        got = tiled_decode(vae, z, tile)
    assert got.shape == want.shape
    assert _rel_err(got, want) < 1e-5


def _storage_decisions(monkeypatch) -> list[tuple[int, bool]]:
    """(bytes, stored?) of every activation whose storage the runner decides by the budget from now on."""
    decisions: list[tuple[int, bool]] = []
    real_produce = tiling._TiledRunner._produce

    def recording_produce(self, shape, dtype, producer, *, store=None):
        act = real_produce(self, shape, dtype, producer, store=store)
        if store is None:
            decisions.append((math.prod(shape) * dtype.itemsize, act.tensor is not None))
        return act

    monkeypatch.setattr(tiling._TiledRunner, "_produce", recording_produce)
    return decisions


# (budget as a fraction of the widest activation's share, height, width): 0.3 recomputes the
# full-resolution activations; 0 recomputes all of them, whose cost grows with the square of the
# depth, so on a smaller image
@pytest.mark.parametrize("budget_fraction,height,width", [(0.3, 37, 53), (0.0, 19, 26)])
def test_activations_over_the_storage_budget_are_recomputed_exactly(vae, monkeypatch, budget_fraction, height, width):
    """Over the budget, activations are recomputed tile by tile instead of stored: same result,
    nothing stored above the limit."""
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.inference_mode():
        want = vae.encode(x)
        want_px = vae.decode(want.mean)
    widest = 64 * height * width * 4  # bytes of the widest full-resolution activation (64 channels, fp32)
    budget = max(1, int(widest * tiling.STORED_LIVE * budget_fraction))
    decisions = _storage_decisions(monkeypatch)
    with torch.inference_mode():
        got = tiled_encode(vae, x, 16, storage_budget=budget)
        got_px = tiled_decode(vae, want.mean, 16, storage_budget=budget)
    assert _rel_err(got.parameters, want.parameters) < 1e-5
    assert _rel_err(got_px, want_px) < 1e-5
    limit = budget // tiling.STORED_LIVE
    assert all(stored == (size <= limit) for size, stored in decisions), (decisions, limit)
    recomputed = [size for size, stored in decisions if not stored]
    assert recomputed and (budget_fraction == 0 or len(recomputed) < len(decisions))


def test_per_level_attention_and_batches(vae_level_attn):
    """Per-level attention runs whole; GroupNorm statistics stay per sample in a batch."""
    x = torch.rand(2, 3, 36, 44, generator=torch.Generator().manual_seed(7)) * 2 - 1
    x[1] *= 0.2  # a different scale per sample: shared statistics would be wrong for both
    with torch.inference_mode():
        want_post = vae_level_attn.encode(x)
        got_post = tiled_encode(vae_level_attn, x, 16)
        z = want_post.mean
        want, got = vae_level_attn.decode(z), tiled_decode(vae_level_attn, z, 16)
    assert _rel_err(got_post.parameters, want_post.parameters) < 1e-5
    assert _rel_err(got, want) < 1e-5


def test_naive_per_tile_decode_is_not_exact():
    """The check above can fail: decoding latent tiles separately (per-tile GroupNorm) is far off."""
    vae = _model(CONFIGS["quant"])
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        want = vae.decode(z)
        naive = torch.cat([torch.cat([vae.decode(z[..., r : r + 8, c : c + 8]) for c in (0, 8)], -1) for r in (0, 8)], -2)
        exact = tiled_decode(vae, z, 32)
    assert _rel_err(naive, want) > 1e-2
    assert _rel_err(exact, want) < 1e-5


def test_bf16_tiled_within_bf16_noise():
    """In bf16 the tiled pass is no further from the fp32 result than the untiled bf16 pass, give or take."""
    vae = _model(CONFIGS["quant"])
    z = torch.randn(1, 4, 18, 14, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ref = vae.decode(z)
        half = AutoencoderKL(vae.config).eval()
        half.load_state_dict(vae.state_dict())
        half = half.to(torch.bfloat16)
        untiled = half.decode(z.bfloat16())
        tiled = tiled_decode(half, z.bfloat16(), 24)
    assert tiled.dtype == torch.bfloat16
    assert _rel_err(tiled, ref) < 2 * _rel_err(untiled, ref) + 1e-2


class _CallCounter:
    """Counts whole-module forward calls: the untiled pass calls decoder/encoder forward, the tiled one never does."""

    def __init__(self, module: torch.nn.Module, raise_oom: bool = False, error: Exception | None = None):
        self.calls = 0
        self.error = error or (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB") if raise_oom else None)
        self.handle = module.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.calls += 1
        if self.error is not None:
            raise self.error


def test_auto_tiles_over_the_budget():
    """Just over the budget the Runner tiles (its storage budget then still holds every activation:
    recomputation is checked above, and with a tiny budget it costs the square of the depth)."""
    vae = _model(CONFIGS["quant"])
    x = torch.rand(1, 3, 40, 56) * 2 - 1
    z = torch.randn(1, 4, 10, 14)

    def just_under(t, mode):
        return MemoryPolicy(estimate_memory(vae, t.shape, t.dtype, mode) - 1, tile_size=16)

    with torch.inference_mode():
        want_post, want_px = vae.encode(x), vae.decode(z)
        enc, dec = _CallCounter(vae.encoder), _CallCounter(vae.decoder)
        post = Runner(vae, just_under(x, "encode")).encode(x)
        px = Runner(vae, just_under(z, "decode")).decode(z)
        assert (enc.calls, dec.calls) == (0, 0)  # the tiled path ran
        Runner(vae, MemoryPolicy(1 << 40)).decode(z)
        assert dec.calls == 1  # a large budget runs the ordinary pass
    assert _rel_err(post.parameters, want_post.parameters) < 1e-5
    assert _rel_err(px, want_px) < 1e-5


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 34359738368 bytes")])
def test_out_of_memory_retries_tiled(error):
    vae = _model(CONFIGS["quant"])
    z = torch.randn(1, 4, 12, 10)
    x = torch.rand(1, 3, 44, 36) * 2 - 1
    with torch.inference_mode():
        want_px, want_post = vae.decode(z), vae.encode(x)
        dec = _CallCounter(vae.decoder, error=error)
        enc = _CallCounter(vae.encoder, error=error)
        px = Runner(vae, MemoryPolicy(1 << 40, tile_size=16)).decode(z)
        post = Runner(vae, MemoryPolicy(1 << 40, tile_size=16)).encode(x)
    assert (dec.calls, enc.calls) == (1, 1)  # tried untiled once, then tiled
    assert _rel_err(px, want_px) < 1e-5
    assert _rel_err(post.parameters, want_post.parameters) < 1e-5


def test_other_errors_are_not_swallowed():
    vae = _model(CONFIGS["quant"])
    _CallCounter(vae.decoder, error=RuntimeError("expected 4 channels"))
    with pytest.raises(RuntimeError, match="expected 4 channels"):
        Runner(vae, MemoryPolicy(1 << 40)).decode(torch.randn(1, 4, 8, 8))


def test_is_out_of_memory():
    assert is_out_of_memory(torch.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_estimates_scale_with_pixels_and_tiles_bound_them():
    vae = _model(CONFIGS["quant"])
    small = estimate_memory(vae, (1, 4, 64, 64), torch.float32, "decode")
    big = estimate_memory(vae, (1, 4, 256, 256), torch.float32, "decode")
    weights = sum(p.numel() for p in vae.parameters()) * 4
    assert 14 < (big - weights) / (small - weights) <= 16  # activations grow with the pixel count
    tiled_small = estimate_memory(vae, (1, 4, 64, 64), torch.float32, "decode", tile_size=128)
    tiled_big = estimate_memory(vae, (1, 4, 256, 256), torch.float32, "decode", tile_size=128)
    assert tiled_big < big / 4 and tiled_small < small
    # bf16 halves the activations; batch multiplies them
    assert estimate_memory(vae, (1, 4, 256, 256), torch.bfloat16, "decode") < big
    assert estimate_memory(vae, (2, 3, 512, 512), torch.float32, "encode") > estimate_memory(vae, (1, 3, 512, 512), torch.float32, "encode")
    assert MemoryPolicy(small).should_tile(vae, (1, 4, 256, 256), torch.float32, "decode")
    assert not MemoryPolicy(big).should_tile(vae, (1, 4, 64, 64), torch.float32, "decode")


def test_cpu_budget_is_part_of_available_memory():
    budget = memory_budget(torch.device("cpu"))
    total = next(int(l.split()[1]) * 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal:"))
    assert 0 < budget < total


def test_cli_max_memory_tiles_and_matches(tmp_path, capsys, tiny_weights, monkeypatch):
    """`vaecli encode/decode --max-memory 1KiB` runs the tiled path and writes the same latents and pixels."""
    import numpy as np
    from PIL import Image

    from vaecli.cli.app import main
    from vaecli.io.images import read_image
    from vaecli.io.latents import read_latent
    from vaecli.runtime import executor

    calls = []
    for name in ("tiled_encode", "tiled_decode"):  # spies: count, then call the real function
        real = getattr(executor, name)
        monkeypatch.setattr(executor, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    img = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (46, 70, 3), dtype=np.uint8)).save(img)

    def run(*args):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        capsys.readouterr()
        return e.value.code

    for budget, out in ((None, "plain"), ("1KiB", "tiled")):
        extra = [] if budget is None else ["--max-memory", budget]
        assert run("encode", img, "-o", tmp_path / out, "--weights", tiny_weights, "--quiet", *extra) == 0
        assert run("decode", tmp_path / out / "in.safetensors", "-o", tmp_path / out, "--quiet", *extra) == 0
    assert calls == ["tiled_encode", "tiled_decode"]
    plain, tiled = (read_latent(tmp_path / d / "in.safetensors").tensor for d in ("plain", "tiled"))
    assert _rel_err(tiled, plain) < 1e-5
    plain_px, tiled_px = (read_image(tmp_path / d / "in.png") for d in ("plain", "tiled"))
    assert (plain_px - tiled_px).abs().max() <= 1 / 255 + 1e-6  # 8-bit PNGs: at most one rounding step apart
    assert run("encode", img, "-o", tmp_path / "bad", "--weights", tiny_weights, "--max-memory", "lots") == 2


def test_a_batch_over_the_budget_runs_in_untiled_slices_not_tiled():
    """Whether an image is tiled must not depend on --batch-size: a batch of 4 whose items fit the budget two at a
    time runs untiled in two slices (before, the whole batch was tiled, and tiled pixels differ from untiled ones
    by float rounding: 1/255 in a few pixels of a real photograph); an item alone over the budget is still tiled."""
    vae = _model(CONFIGS["quant"])
    z = torch.randn(4, 4, 10, 14)
    two = estimate_memory(vae, (2, *z.shape[1:]), z.dtype, "decode")
    with torch.inference_mode():
        want = torch.cat([vae.decode(z[i : i + 1]) for i in range(4)])
        dec = _CallCounter(vae.decoder)
        px = Runner(vae, MemoryPolicy(two, tile_size=16)).decode(z)
        assert dec.calls == 2  # two untiled slices of two
        one = estimate_memory(vae, (1, *z.shape[1:]), z.dtype, "decode")
        Runner(vae, MemoryPolicy(one - 1, tile_size=16)).decode(z)
        assert dec.calls == 2  # one item alone is over the budget: tiled, the ordinary pass not called
    assert _rel_err(px, want) < 1e-5  # slices of 2 vs items of 1: the kernels' own batch-dependent rounding (README)
