"""torchrun with 2 CPU processes (gloo): every input encoded exactly once, outputs equal a single process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.clitools import run_main
from vaecli.batch.distributed import World, shard
from vaecli.io.latents import read_latent


def test_shard_is_a_partition_in_round_robin_order():
    items = list(range(11))
    shares = [shard(items, World(rank=r, size=3)) for r in range(3)]
    assert sorted(sum(shares, [])) == items
    assert shares[1] == [1, 4, 7, 10]
    assert shard(items, World()) == items


def _encode(args, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)


NAMES = ["a.png", "b.png", "sub/c.png", "sub/d.png", "e.png"]
METRIC_REL = METRIC_ABS = 1e-7  # float32's epsilon: see the roundtrip comparison below


def _one_and_two_ranks(tmp_path, capsys, command: list[str], inputs, tag: str) -> tuple[dict, dict]:
    """Run `vaecli COMMAND INPUTS ...` once as one process (in this one, -o TMP/TAG-one) and once under
    torchrun with 2 CPU ranks (-o TMP/TAG-two); both must succeed; returns their JSON reports."""
    common = [command[0], str(inputs), *command[1:], "--json", "--batch-size", "1", "--device", "cpu"]
    code, single, err = run_main(capsys, *common, "-o", str(tmp_path / f"{tag}-one"))
    multi = _encode([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                     "-m", "vaecli", *common, "-o", str(tmp_path / f"{tag}-two")])
    assert code == 0, err
    assert multi.returncode == 0, multi.stderr
    report = json.loads(multi.stdout)  # one document: only rank 0 reports
    assert {r["rank"] for r in report["results"]} == {0, 1}  # both ranks did work
    assert report["summary"]["ok"] == len(NAMES) and report["summary"]["ranks"] == 2
    return json.loads(single), report


def test_torchrun_two_cpu_ranks_match_one_process(tmp_path, capsys, tiny_weights):
    """encode, then decode and roundtrip of the result, each sharded over 2 ranks: every input done
    exactly once, outputs and statuses identical to a single process's, metrics equal to float32 rounding."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i, name in enumerate(NAMES):  # two sizes, so batches group differently per rank
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (20 + 4 * (i % 2), 28, 3), dtype=np.uint8)).save(src / name)
    _, report = _one_and_two_ranks(tmp_path, capsys, ["encode", "--weights", str(tiny_weights)], src, "enc")
    assert sorted(r["input"] for r in report["results"]) == sorted(str(src / n) for n in NAMES)  # each once
    for name in NAMES:
        out = name.replace(".png", ".safetensors")
        assert torch.equal(read_latent(tmp_path / "enc-two" / out).tensor, read_latent(tmp_path / "enc-one" / out).tensor)

    _, report = _one_and_two_ranks(tmp_path, capsys, ["decode"], tmp_path / "enc-one", "dec")
    assert sorted(r["input"] for r in report["results"]) == sorted(str(tmp_path / "enc-one" / n.replace(".png", ".safetensors")) for n in NAMES)
    for name in NAMES:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "dec-two" / name)), np.asarray(Image.open(tmp_path / "dec-one" / name)))

    single, report = _one_and_two_ranks(tmp_path, capsys, ["roundtrip", "--weights", str(tiny_weights), "--no-lpips"], src, "rt")
    assert [r["input"] for r in report["results"]] == [r["input"] for r in single["results"]]  # input order restored
    assert [r["status"] for r in report["results"]] == [r["status"] for r in single["results"]] == ["ok"] * len(NAMES)
    # The metrics come from float32 reconstructions, whose convolutions may sum in an order that depends on the
    # thread count (one process here, OMP_NUM_THREADS=1 per rank): seen 1.1e-9 relative on PSNR. float32's
    # epsilon (1.2e-7) bounds such noise; pairing a wrong image or a wrong rank's result moves them by far more.
    assert [r["psnr"] for r in report["results"]] == pytest.approx([r["psnr"] for r in single["results"]], rel=METRIC_REL, abs=METRIC_ABS)
    assert report["summary"]["mean_psnr"] == pytest.approx(single["summary"]["mean_psnr"], rel=METRIC_REL, abs=METRIC_ABS)
    assert report["summary"]["mean_ssim"] == pytest.approx(single["summary"]["mean_ssim"], rel=METRIC_REL, abs=METRIC_ABS)
