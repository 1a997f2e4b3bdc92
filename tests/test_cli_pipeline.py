"""The batch engine's parts: the fp16 safety net, batching by size within a byte budget, input expansion and planning."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch

from vaecli.batch.inputs import Found, expand_inputs
from vaecli.batch.plan import Job, output_path, plan_jobs
from vaecli.batch.roundtrip import LPIPS_BYTES_PER_PIXEL, lpips_within
from vaecli.batch.run import Run, run_batched
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


def _jobs(names: list[str]) -> list[Job]:
    return [Job(Found(Path(n))) for n in names]


def _batches(sizes: list[str], batch_size: int, budget: int, cost: int = 1) -> tuple[list[list[int]], int]:
    """run_batched over items of the given size keys: (batches of item indices, most bytes held at once)."""
    jobs = _jobs([f"{i}.png" for i in range(len(sizes))])
    run = Run(jobs, None, data_budget=budget)
    batches, peak = [], 0

    def process(batch):
        nonlocal peak
        peak = max(peak, sum(run.held.values()))
        batches.append([i for i, _ in batch])
        for i, _ in batch:
            run.finish(jobs[i], "ok")

    run_batched(run, jobs, load=lambda j: (jobs.index(j), sizes[jobs.index(j)]), cost=lambda j: cost, key=lambda item: item[1],
                batch_size=batch_size, process=process, jobs_of=lambda b: [jobs[i] for i, _ in b], workers=2)
    assert [r["status"] for r in run.close()] == ["ok"] * len(sizes)
    return batches, peak


def test_mixed_sizes_keep_full_batches_within_the_byte_budget():
    sizes = ["big"] + ["small"] * 7 + ["mid"] * 3 + ["small"]
    batches, _ = _batches(sizes, batch_size=4, budget=100)
    assert sorted(map(len, batches), reverse=True) == [4, 4, 3, 1]  # the one big image does not split the small ones
    assert all(len({sizes[i] for i in b}) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    # A budget of 6 items: partial groups go early, and never more than 6 items' bytes are held.
    many, peak = _batches([str(i % 5) for i in range(20)], batch_size=8, budget=6)
    assert max(map(len, many)) <= 8 and sum(map(len, many)) == 20 and peak <= 6
    # One item over the whole budget still goes, alone.
    (one,), peak = _batches(["huge"], batch_size=4, budget=10, cost=50)
    assert one == [0] and peak == 50


def test_expand_and_plan(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.png", "d/a.jpg", "d/sub/c.png", "d/sub/c.jpg", "d/notes.txt", "d/.cache/x.png", "e.png", "d/out/old.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    warnings = []
    args = [str(tmp_path / "d"), str(tmp_path / "*.png"), str(tmp_path / "e.png"), str(tmp_path / "nope.png"), str(tmp_path / "d" / "notes.txt")]
    found = expand_inputs(args, (".png", ".jpg"), warnings.append, exclude=tmp_path / "d" / "out")
    names = [str(f.path.relative_to(tmp_path)) if f.error is None else f.error for f in found]
    assert names[:5] == ["d/a.jpg", "d/b.png", "d/sub/c.jpg", "d/sub/c.png", "e.png"]  # sorted; hidden, .txt and -o skipped; once each
    assert names[5].endswith("nope.png: no such file or folder") and "notes.txt: not a file this command reads" in names[6]
    assert warnings == [f"left out of the folder and glob searches: 1 hidden file ({tmp_path / 'd' / '.cache' / 'x.png'}); "
                        "name a file to take it as an input"]  # said, not dropped silently; notes.txt is no media: not counted
    warnings.clear()
    (tmp_path / "empty").mkdir()
    assert expand_inputs([str(tmp_path / "*.webp"), str(tmp_path / "empty")], (".png",), warnings.append) == []
    assert len(warnings) == 2 and "matches no" in warnings[0] and "nothing to do" in warnings[1]

    def name(job):
        job.outputs = (output_path(job.found, tmp_path / "out", ".safetensors"),)

    jobs = plan_jobs(expand_inputs([str(tmp_path / "d"), str(tmp_path / "e.png")], (".png", ".jpg"), warnings.append), name)
    outs = {str(j.input.relative_to(tmp_path)): (j.output, j.error) for j in jobs}
    assert outs["d/a.jpg"] == (tmp_path / "out" / "a.safetensors", None)
    assert outs["e.png"] == (tmp_path / "out" / "e.safetensors", None)
    for mine, other in (("d/sub/c.jpg", "d/sub/c.png"), ("d/sub/c.png", "d/sub/c.jpg")):  # a clash fails both, naming the other
        assert "also be written for" in outs[mine][1] and other in outs[mine][1]


def test_lpips_stays_within_its_budget():
    """The batch at once when it fits, image by image when one fits, null and a warning naming the file when none does.
    (The budget logic is what is tested: a plain mean absolute difference stands in for LPIPS' network.)"""
    calls = []

    def distance(a, b):  # (B, 3, H, W) pairs in [-1, 1] -> (B,)
        calls.append(a.shape[0])
        return (a - b).abs().mean(dim=(1, 2, 3))

    x, y = torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48)
    one = 32 * 48 * LPIPS_BYTES_PER_PIXEL
    whole = lpips_within(x, y, distance, 2 * one, ["a", "b"])
    torch.testing.assert_close(whole, (2 * (x - y)).abs().mean(dim=(1, 2, 3)).double())
    torch.testing.assert_close(lpips_within(x, y, distance, one, ["a", "b"]), whole)
    assert calls == [2, 1, 1] and whole.dtype == torch.float64
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        skipped = lpips_within(x, y, distance, one - 1, ["a.png", "b.png"])
    assert torch.isnan(skipped).all() and [str(w.message).split(":")[0] for w in caught] == ["a.png", "b.png"]
