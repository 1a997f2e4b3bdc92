"""The pipeline's parts: the fp16 safety net, batching by size, input expansion and output planning."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from vaecli.batch.engine import _batched_by_key, expand_inputs, plan_jobs
from vaecli.config import VAEConfig
from vaecli.model import AutoencoderKL
from vaecli.runtime.executor import Runner


@pytest.fixture
def overflowing_fp16_model():
    """A real tiny model whose last convolutions are scaled so float16 overflows (as the SDXL VAE does)."""
    torch.manual_seed(0)
    m = AutoencoderKL(VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, embed_dim=4)).eval()
    with torch.no_grad():
        m.decoder.conv_out.weight.mul_(1e5)
        m.encoder.conv_out.weight.mul_(1e5)
    return m.half()


def test_fp16_overflow_is_redone_in_fp32_with_a_warning(overflowing_fp16_model):
    m = overflowing_fp16_model
    reference = copy.deepcopy(m).float()  # the same (fp16-rounded) weights in float32
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        assert not torch.isfinite(m.decode(z.half())).all()  # the overflow is real
        want_pixels = reference.decode(z)
        want_mean = reference.encode(x).mean
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pixels = Runner(m).decode(z)
        post = Runner(m).encode(x)
    messages = [str(w.message) for w in caught]
    assert any("decode" in s and "float32" in s for s in messages) and any("encode" in s for s in messages)
    assert pixels.dtype == torch.float32 and torch.isfinite(pixels).all()
    torch.testing.assert_close(pixels, want_pixels, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(post.mean, want_mean, rtol=1e-5, atol=1e-3)


def test_fp32_model_never_warns():
    torch.manual_seed(0)
    m = AutoencoderKL(VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, embed_dim=4)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Runner(m).decode(torch.randn(1, 4, 4, 4)).shape == (1, 3, 8, 8)


def test_mixed_sizes_keep_full_batches():
    sizes = ["big"] + ["small"] * 7 + ["mid"] * 3 + ["small"]
    batches = list(_batched_by_key(((s, i) for i, s in enumerate(sizes)), batch_size=4, max_pending=16))
    assert sorted(map(len, batches), reverse=True) == [4, 4, 3, 1]  # the one big image does not split the small ones
    assert all(len({sizes[i] for i in b}) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    # With little room for partial groups, the largest waiting group goes early and memory stays bounded.
    many = list(_batched_by_key(((i % 5, i) for i in range(20)), batch_size=8, max_pending=6))
    assert max(map(len, many)) <= 8 and sum(map(len, many)) == 20 and len(many) < 20


def test_expand_and_plan(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.png", "d/a.jpg", "d/sub/c.png", "d/sub/c.jpg", "d/notes.txt", "d/.cache/x.png", "e.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = expand_inputs([str(tmp_path / "d"), str(tmp_path / "*.png"), str(tmp_path / "e.png"), str(tmp_path / "nope.png")], (".png", ".jpg"))
    names = [str(p.relative_to(tmp_path)) if err is None else err for p, _, err in found]
    assert names[:5] == ["d/a.jpg", "d/b.png", "d/sub/c.jpg", "d/sub/c.png", "e.png"]  # sorted, hidden and .txt skipped, deduplicated
    assert names[5].endswith("nope.png: no such file or folder")

    jobs = plan_jobs([str(tmp_path / "d"), str(tmp_path / "e.png")], (".png", ".jpg"), tmp_path / "out", lambda p: ".safetensors")
    outs = {str(j.input.relative_to(tmp_path)): (j.output, j.error) for j in jobs}
    assert outs["d/a.jpg"][0] == tmp_path / "out" / "a.safetensors"
    assert outs["d/sub/c.jpg"][0] == tmp_path / "out" / "sub" / "c.safetensors"
    assert outs["d/sub/c.png"][1] and "also the output of" in outs["d/sub/c.png"][1]  # a collision fails, never overwrites
    assert outs["e.png"][0] == tmp_path / "out" / "e.safetensors"
    beside = plan_jobs([str(tmp_path / "e.png")], (".png",), None, lambda p: ".safetensors")
    assert beside[0].output == tmp_path / "e.safetensors"
