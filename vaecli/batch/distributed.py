"""torchrun support: every rank takes a deterministic share of the inputs, rank 0 reports for all.

    torchrun --nproc-per-node 2 -m vaecli encode photos/ -o latents/

The inputs are planned identically on every rank (sorted, output paths and clashes decided over the
whole list), then rank r takes items r, r+N, r+2N, ...: each input is done by exactly one rank, which
writes its output itself (atomically, as a single process would). At the end the per-rank results
are gathered to rank 0 over gloo (CPU, so it works with or without GPUs), put back in input order
and reported once. Without torchrun's environment everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

from .report import summarize

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    @property
    def reports(self) -> bool:
        """Only rank 0 prints results, progress and the summary."""
        return self.rank == 0


def current_world() -> World:
    """The world torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK; a single process otherwise."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def shard(items: list[T], world: World) -> list[T]:
    """This rank's share: items rank, rank + size, ... (round robin balances sizes that come sorted)."""
    return items[world.rank :: world.size]


def rank_device(spec: str, world: World) -> str:
    """`auto`/`cuda` -> this rank's own GPU (cuda:LOCAL_RANK) under torchrun; anything else unchanged."""
    if not world.is_distributed or spec not in ("auto", "cuda"):
        return spec
    import torch

    if torch.cuda.is_available():
        return f"cuda:{world.local_rank % torch.cuda.device_count()}"
    return spec


def gather_report(results: list[dict], summary: dict, world: World) -> tuple[list[dict], dict] | None:
    """Single process: (results, summary) unchanged. Under torchrun, on rank 0: every rank's results
    in the original input order, each tagged with its rank, and their summary as a single process
    reports it (the slowest rank's seconds) plus the number of ranks; on other ranks: None."""
    if not world.is_distributed:
        return results, summary
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=world.rank, world_size=world.size)
    try:
        gathered = [None] * world.size if world.rank == 0 else None
        dist.gather_object(([dict(r, rank=world.rank) for r in results], summary["seconds"]), gathered, dst=0)
    finally:
        dist.destroy_process_group()
    if world.rank != 0:
        return None
    per_rank = [g[0] for g in gathered]
    total = sum(len(p) for p in per_rank)
    merged = [per_rank[i % world.size][i // world.size] for i in range(total)]  # undo the round robin
    return merged, dict(summarize(merged, max(g[1] for g in gathered)), ranks=world.size)
