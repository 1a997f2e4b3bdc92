"""torchrun with 2 CPU processes (gloo): every input encoded exactly once, outputs equal a single process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from vaecli.distributed import World, shard
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


def test_torchrun_two_cpu_ranks_match_one_process(tmp_path, tiny_weights):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    names = ["a.png", "b.png", "sub/c.png", "sub/d.png", "e.png"]
    for i, name in enumerate(names):  # two sizes, so batches group differently per rank
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (20 + 4 * (i % 2), 28, 3), dtype=np.uint8)).save(src / name)
    common = ["encode", str(src), "--weights", str(tiny_weights), "--json", "--batch-size", "1", "--device", "cpu"]
    single = _encode([sys.executable, "-m", "vaecli", *common, "-o", str(tmp_path / "one")])
    multi = _encode([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                     "-m", "vaecli", *common, "-o", str(tmp_path / "two")])
    assert single.returncode == 0, single.stderr
    assert multi.returncode == 0, multi.stderr
    report = json.loads(multi.stdout)  # one document: only rank 0 reports
    inputs = [r["input"] for r in report["results"]]
    assert sorted(inputs) == sorted(str(src / n) for n in names)  # each input exactly once
    assert {r["rank"] for r in report["results"]} == {0, 1}  # both ranks did work
    assert report["summary"]["ok"] == 5 and report["summary"]["ranks"] == 2
    for name in names:
        out = name.replace(".png", ".safetensors")
        assert torch.equal(read_latent(tmp_path / "two" / out).tensor, read_latent(tmp_path / "one" / out).tensor)
