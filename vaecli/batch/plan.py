"""Inputs -> jobs, each with every output path decided before any model loads and checked against the run.

The two rules that need the whole run in view live here (the per-file rules about files already
on disk live in vaecli.batch.freshness):

- an input of the run is never an output, not even with --overwrite (same path, a symlink to it,
  or a hard link: same device and inode);
- two jobs never share an output: every input whose output (or side output, e.g. a roundtrip's
  `.compare.png`) is also claimed by another input fails, with a message naming the others. Names
  stay `<stem><suffix>`, so they never change from one run to the next as files come and go.

Under torchrun every rank plans the same whole list, so clashes are found across ranks, and then
takes its share (vaecli.batch.distributed.shard).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io.latents import LatentHeader
from .freshness import Recipe
from .inputs import Found


@dataclass
class Job:
    """One input, its planned outputs (main output first), and what became of it."""

    found: Found
    outputs: tuple[Path, ...] = ()  # empty: nothing is written for it (roundtrip without -o)
    kind: str = ""  # "image" | "video" for media inputs; "latent" for decode's
    header: LatentHeader | None = None  # decode: the latent's shape and metadata, read while planning
    error: str | None = None  # set when it failed before any work
    seen: dict[Path, tuple | None] = field(default_factory=dict)  # output -> its state when judged (write-time check)
    recipe: Recipe | None = None  # how its outputs are made (set when judged)
    result: dict = field(default_factory=dict)

    @property
    def input(self) -> Path:
        return self.found.path

    @property
    def output(self) -> Path | None:
        return self.outputs[0] if self.outputs else None


def output_path(found: Found, out_dir: Path | None, suffix: str) -> Path:
    """OUT/<relative path without its last suffix><suffix> (folder inputs mirrored under OUT), or beside the
    input. Only the last suffix goes: img.001.png -> img.001.safetensors (Path.with_suffix would give img.safetensors)."""
    source = found.path if out_dir is None else out_dir / found.relative
    return source.with_name(source.stem + suffix)


def plan_jobs(found: list[Found], name: Callable[[Job], None]) -> list[Job]:
    """One job per found input; `name(job)` sets its kind and outputs (or raises InputError), then the run's rules apply."""
    jobs = []
    for f in found:
        job = Job(f, error=f.error)
        if job.error is None:
            try:
                name(job)
            except InputError as e:
                job.error = str(e)
            except Exception as e:  # noqa: BLE001 - a header nobody expected fails this input, not the plan
                job.error = f"{job.input}: cannot plan it ({type(e).__name__}: {e})"
        jobs.append(job)
    _refuse_inputs_as_outputs(jobs)
    _fail_clashes(jobs)
    return jobs


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _refuse_inputs_as_outputs(jobs: list[Job]) -> None:
    inputs: dict[Path, Path] = {}
    ids: dict[tuple[int, int], Path] = {}
    for job in jobs:
        if job.found.error is None:
            inputs[job.input.resolve()] = job.input
            if (fid := _file_id(job.input)) is not None:
                ids[fid] = job.input
    for job in jobs:
        if job.error is not None:
            continue
        for out in job.outputs:
            other = inputs.get(out.resolve()) or ids.get(_file_id(out))  # type: ignore[arg-type]
            if other is not None:
                what = "itself" if other == job.input else f"the input {other}"
                job.error = f"{job.input}: its output {out} would replace {what}; choose another -o"
                break


def _fail_clashes(jobs: list[Job]) -> None:
    claims: dict[Path, list[tuple[Job, Path]]] = {}
    for job in jobs:
        if job.error is None:
            for out in job.outputs:
                claims.setdefault(out.resolve(), []).append((job, out))
    for claimants in claims.values():
        if len(claimants) < 2:
            continue
        for job, out in claimants:
            if job.error is not None:
                continue
            others = [str(o.input) for o, _ in claimants if o is not job]
            named = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            job.error = (f"{job.input}: its output {out} would also be written for {named}; "
                         "process them into separate -o folders, or rename one")
