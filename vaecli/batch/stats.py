"""stats: a data set's latents -> streamed float64 moments and the normaliser fitted on them, and its file written safely.

The images (and video frames) are those encode would read, read and padded the same way
(vaecli.batch.encode.prepare_image), encoded through the Runner; the moments are of the model
latents encode stores before any scaling (vaecli.batch.latent_space: raw z, FLUX.2's normalised
patches), the posterior's mode, every cell of every latent. Nothing is held but the running sums.

The normaliser file (-o) follows the output-safety rule: an existing file is replaced only when it
is a normaliser file (vaecli's) or with --overwrite, and checked once more just before the rename. It
carries its recipe in its metadata: the model's identity, the options, and the data (how many
inputs, and the sha256 of their names and contents).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .. import __version__
from ..errors import InputError, VaecliError
from ..io.atomic import scratch_path
from ..io.hashing import fingerprint
from ..io.provenance import PROVENANCE_KEY, provenance_text
from ..io.video import open_video
from ..runtime.executor import Runner
from ..stats import normalizer_file
from ..stats.moments import LatentMoments
from ..stats.normalizer import LatentNormalizer
from ..weights.formats import read_header
from .encode import (
    EncodeOptions,
    Prepared,
    batch_key,
    choose_latent,
    frame_batches,
    frame_seeds,
    image_cost,
    prepare_image,
    sample_seed,
)
from .freshness import (
    file_state,  # the output-safety rule's own look at a file (inode, size, mtime)
)
from .latent_space import layout_of, pixel_multiple, stored_geometry, to_model_latents
from .plan import Job
from .run import Run, run_batched
from .workload import say_resize_cost


class Gatherer:
    """Encode jobs and fold their latents into one LatentMoments; remembers each input's sha256 for the recipe."""

    def __init__(self, runner: Runner, opts: EncodeOptions, run: Run):
        self.runner, self.opts, self.run = runner, opts, run
        self.vae = runner.vae
        self.moments = LatentMoments.empty(stored_geometry(self.vae, layout_of(self.vae))[0])
        self.digests: dict[str, str] = {}  # Found.key -> sha256 of the file read
        self.batch_size = opts.batch_size or runner.default_batch_size

    def latents(self, pixels: torch.Tensor, seeds: list[int | None]) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> model latents (B, C', h, w), unscaled: the posterior's mode, or with
        --sample the same draw encode --sample stores."""
        return to_model_latents(self.vae, choose_latent(self.runner.encode(pixels.mul(2).sub_(1)), seeds))

    def images(self, batch: list[Prepared]) -> None:
        t = self.latents(torch.stack([p.pixels for p in batch]), [sample_seed(self.opts, p.job) for p in batch])  # (B, C', h, w)
        self.moments.update(t)
        for p in batch:
            self.digests[p.job.found.key] = p.fingerprint["sha256"]
            self.run.finish(p.job, "ok", shape=list(t.shape[1:]))

    def video(self, job: Job) -> None:
        taken = fingerprint(job.input)
        stream = open_video(job.input, alpha=self.opts.alpha)
        frames = 0
        part = LatentMoments.empty(self.moments.channels)  # merged only once the whole video is read
        seed = sample_seed(self.opts, job)
        for batch, *_ in frame_batches(stream, self.opts.size, pixel_multiple(self.vae), self.batch_size):
            part.update(self.latents(torch.stack(batch), frame_seeds(seed, frames, len(batch))))  # (T', C', h, w)
            frames += len(batch)
        if frames == 0:
            raise InputError(f"{job.input}: video has no frames")
        self.moments.merge(part)
        self.digests[job.found.key] = taken["sha256"]
        self.run.finish(job, "ok", frames=frames)

    def data_identity(self) -> dict:
        """The inputs whose latents went into the moments: their count and one sha256 over names and contents."""
        h = hashlib.sha256()
        for key in sorted(self.digests):
            h.update(f"{key}\0{self.digests[key]}\n".encode())
        return {"inputs": len(self.digests), "cells": self.moments.count, "sha256": h.hexdigest()}


def gather_moments(runner: Runner, jobs: list[Job], opts: EncodeOptions, on_result=None) -> tuple[LatentMoments, dict, list[dict], dict]:
    """(moments, data identity, results in input order, summary) of every job's latents."""
    run = Run(jobs, on_result, opts.data_budget)
    gatherer = Gatherer(runner, opts, run)
    multiple = pixel_multiple(runner.vae)
    try:
        for job in jobs:
            if job.error is not None:
                run.fail(job, job.error)
        todo = [j for j in jobs if j.error is None]
        say_resize_cost(runner, todo, opts.size, decode=False)
        run_batched(run, [j for j in todo if j.kind == "image"], load=lambda j: prepare_image(j, opts, multiple), cost=lambda j: image_cost(j, opts),
                    key=batch_key, batch_size=gatherer.batch_size, process=gatherer.images, jobs_of=lambda b: [p.job for p in b],
                    workers=opts.workers)
        for job in todo:
            if job.kind == "video":
                run.attempt([job], gatherer.video, job)
    finally:
        results = run.close()
    return gatherer.moments, gatherer.data_identity(), results, run.summary(results)


def is_normalizer_file(path: Path) -> bool:
    """A file vaecli wrote as a normaliser (its header says so): the only kind -o replaces without --overwrite."""
    try:
        header = read_header(path) if path.is_file() else None
    except VaecliError:  # empty, text, a damaged header: someone else's file
        return False
    return header is not None and header.metadata.get("format") == normalizer_file.NORMALIZER_FORMAT


class NormalizerOutput:
    """The -o FILE of `stats`: judged before any work, written atomically with a last check before the rename."""

    def __init__(self, path: Path, overwrite: bool):
        self.path, self.overwrite = path, overwrite
        if path.is_dir():
            raise VaecliError(f"{path}: is a folder; name the normaliser file, e.g. {path / 'normalizer.safetensors'}")
        if path.suffix.lower() != ".safetensors":
            raise VaecliError(f"{path}: a normaliser file is .safetensors")
        if path.exists() and not overwrite and not is_normalizer_file(path):
            raise VaecliError(f"{path}: already exists and is not a vaecli normaliser file; pass --overwrite to replace it, or choose another -o")
        if not path.parent.is_dir():
            raise VaecliError(f"{path}: its folder {path.parent} does not exist")
        try:
            with scratch_path(path.parent):
                pass
        except OSError as e:
            raise VaecliError(f"{path}: cannot write in {path.parent} ({e.strerror or e})") from None
        self.seen = file_state(path)

    def _guard(self) -> None:
        if self.overwrite or file_state(self.path) == self.seen or is_normalizer_file(self.path):
            return
        raise VaecliError(f"{self.path}: appeared or changed during the run and is not a normaliser file; left as it is")

    def write(self, norm: LatentNormalizer, recipe: dict) -> None:
        norm.metadata[PROVENANCE_KEY] = provenance_text({"vaecli": __version__, **recipe})
        try:
            normalizer_file.save(norm, self.path, before_replace=self._guard)
        except OSError as e:  # a full disk at the end: nothing half-written is left (atomic), one line
            raise VaecliError(f"{self.path}: cannot write ({e.strerror or e})") from None
