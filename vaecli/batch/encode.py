"""encode: images and videos -> latent files, plus the preparation of pixels that roundtrip shares.

An image is fingerprinted (size, mtime, sha256), then read, resized or cropped as asked, padded to a
multiple of the model's factor, encoded in same-size batches and written as a latent whose metadata
says how to decode it and whose provenance says how it was made. A video streams through the same
steps a batch of frames at a time; only its latents (1/48 of the pixels for an f8 model) are kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..errors import InputError
from ..io.hashing import fingerprint
from ..io.images import (
    IMAGE_SUFFIXES,
    SizeSpec,
    image_size,
    pad_to_multiple,
    read_image,
    resize_and_crop,
)
from ..io.latents import LatentMeta, write_latent
from ..io.video import FFMPEG_SUFFIXES, is_video, open_video
from ..model import DiagonalGaussianDistribution
from ..runtime.executor import Runner
from ..stats.normalizer import LatentNormalizer
from .freshness import Recipe, write_guard
from .latent_space import PATCHIFIED, layout_of, pixel_multiple, to_stored
from .models import dtype_name
from .plan import Job, output_path
from .run import DEFAULT_WORKERS, Run, run_batched, triage
from .workload import say_resize_cost

MEDIA_SUFFIXES = IMAGE_SUFFIXES + FFMPEG_SUFFIXES
BYTES_PER_PIXEL_HELD = 3 * 4 * 3  # float32 RGB, held about three times (read, padded, stacked in the batch)


@dataclass
class EncodeOptions:
    model_name: str | None = None  # registry name recorded for decode (None: a model given by files)
    weights: Path | None = None  # weights file given by path (recorded for decode)
    model_identity: dict = field(default_factory=dict)  # see vaecli.batch.models
    batch_size: int | None = None
    size: SizeSpec = field(default_factory=SizeSpec)
    alpha: str = "white"
    scale: bool = True
    sample: bool = False
    seed: int = 0
    save_dist: bool = False
    overwrite: bool = False
    workers: int = DEFAULT_WORKERS
    data_budget: int = 1 << 30
    normalizer: LatentNormalizer | None = None  # --normalize FILE: stored instead of scaled (vaecli.batch.latent_space)
    normalizer_text: str | None = None  # its bytes as base64, recorded in each latent
    normalizer_sha256: str | None = None  # its identity in the recipe


def name_media(job: Job, out_dir: Path | None, suffix: str | None) -> None:
    """Plan a media input: image or video, and OUT/<stem><suffix> (None: no output)."""
    job.kind = "video" if is_video(job.input) else "image"
    job.outputs = () if suffix is None else (output_path(job.found, out_dir, suffix),)


def sample_seed(opts: EncodeOptions, job: Job) -> int | None:
    """With --sample: this file's seed, from --seed and its name within the run (Found.key), so two
    folders with the same file names draw different noise and a rerun draws the same."""
    if not opts.sample:
        return None
    digest = hashlib.sha256(f"{opts.seed}\0{job.found.key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: torch seeds are signed 64-bit


def choose_latent(post: DiagonalGaussianDistribution, seeds: list[int | None]) -> torch.Tensor:
    """Mode, or a per-item reproducible sample drawn on the CPU (the same on every device)."""
    z = post.mode()
    if seeds[0] is None:
        return z
    eps = torch.stack([torch.randn(z.shape[1:], generator=torch.Generator().manual_seed(s)) for s in seeds])  # (B, C, h, w)
    return post.mean + post.std * eps.to(z.device)


def frame_seeds(seed: int | None, first: int, count: int) -> list[int | None]:
    """Frame k of a video is drawn with the file's seed + k."""
    return [None if seed is None else (seed + first + i) % 2**63 for i in range(count)]


def shaping_options(opts: EncodeOptions) -> dict:
    """The encode options that change pixels fed to the model or the latent drawn from them."""
    return {
        "resize": None if opts.size.width is None else [opts.size.width, opts.size.height],
        "center_crop": opts.size.center_crop,
        "alpha": opts.alpha,
        "posterior": "sample" if opts.sample else "mode",
        "seed": opts.seed if opts.sample else None,
    }


@dataclass
class Prepared:
    """One image ready for the model: padded pixels in [0, 1] and what was done to get them."""

    job: Job
    pixels: torch.Tensor  # (3, Hp, Wp), H and W padded to multiples of the factor
    height: int  # content size before padding
    width: int
    original_height: int
    original_width: int
    size_handling: str
    fingerprint: dict


def prepare_frame(x: torch.Tensor, size: SizeSpec, factor: int) -> tuple[torch.Tensor, int, int, str]:
    """(3, H, W) in [0, 1] -> (padded pixels, content height, content width, description)."""
    try:
        x, how = resize_and_crop(x, size, factor)
    except ValueError as e:
        raise InputError(str(e)) from None
    h, w = x.shape[-2:]
    x, pad = pad_to_multiple(x, factor)
    return x, h, w, "; ".join(s for s in (how, pad) if s) or "none"


def prepare_image(job: Job, opts: EncodeOptions, factor: int) -> Prepared:
    """Fingerprint, then read and shape one image (runs in a loader thread)."""
    taken = fingerprint(job.input)  # before reading: a change while reading shows as stale next time
    x = read_image(job.input, alpha=opts.alpha)
    oh, ow = x.shape[-2:]
    try:
        px, h, w, how = prepare_frame(x, opts.size, factor)
    except InputError as e:
        raise InputError(f"{job.input}: {e}") from None
    return Prepared(job, px, h, w, oh, ow, how, taken)


def image_cost(job: Job, opts: EncodeOptions, per_pixel: int = BYTES_PER_PIXEL_HELD) -> int:
    """Bytes one image holds from its read to its written output, from its header (and --resize)."""
    w, h = image_size(job.input) or (1, 1)
    (rh, rw), _ = opts.size.resized(h, w, 1)  # the crop only ever shrinks it: the larger of before and after is held
    return per_pixel * max(w * h, rh * rw)


def batch_key(p: Prepared) -> tuple:
    return tuple(p.pixels.shape), p.height, p.width  # same padded and same content size


def frame_batches(stream, size: SizeSpec, factor: int, batch_size: int) -> Iterator[tuple[list[torch.Tensor], int, int, str]]:
    """A video's frames prepared like images, in batches: (frames, content h, content w, size handling)."""
    frames: list[torch.Tensor] = []
    for frame in stream.frames:
        px, h, w, how = prepare_frame(frame, size, factor)
        frames.append(px)
        if len(frames) == batch_size:
            yield frames, h, w, how
            frames = []
    if frames:
        yield frames, h, w, how


class Encoder:
    """Encode jobs on one model under one set of options."""

    def __init__(self, runner: Runner, opts: EncodeOptions, run: Run):
        self.runner, self.opts, self.run = runner, opts, run
        self.vae = runner.vae
        self.batch_size = opts.batch_size or runner.default_batch_size

    @property
    def layout(self) -> str | None:
        """Recorded only when not raw z's own ("spatial"), so other models' latents stay as they were."""
        return PATCHIFIED if layout_of(self.vae) == PATCHIFIED else None

    @property
    def scaled(self) -> bool:
        return self.opts.scale and self.opts.normalizer is None and self.vae.config.scaling_factor is not None

    def recipe(self, job: Job) -> Recipe:
        space = {"layout": self.layout} if self.layout else {}  # keys only when set: older recipes stay fresh
        if self.opts.normalizer_sha256 is not None:
            space["normalizer_sha256"] = self.opts.normalizer_sha256
        return Recipe.of(self.opts.model_identity, output="latent", **shaping_options(self.opts), sample_seed=sample_seed(self.opts, job),
                         scaled=self.scaled, save_dist=self.opts.save_dist, dtype=dtype_name(self.runner.dtype), **space)

    def meta(self, job: Job, h, w, oh, ow, how, **video) -> LatentMeta:
        cfg, opts = self.vae.config, self.opts
        shaping = shaping_options(opts)
        return LatentMeta(
            model=opts.model_name or cfg.name, config=cfg.to_json(), scaling_factor=cfg.scaling_factor, shift_factor=cfg.shift_factor,
            scaled=self.scaled, height=h, width=w, original_height=oh, original_width=ow,
            size_handling=how, posterior=shaping["posterior"], seed=shaping["seed"], sample_seed=sample_seed(opts, job),
            preprocess=json.dumps({k: shaping[k] for k in ("resize", "center_crop", "alpha", "seed")}, sort_keys=True),
            weights=None if opts.weights is None else str(Path(opts.weights).resolve()),
            source=str(job.input.resolve()), vaecli_version=__version__, layout=self.layout,
            normalizer=opts.normalizer_text, **video,
        )

    def latent_of(self, x: torch.Tensor, seeds: list[int | None]) -> tuple[torch.Tensor, DiagonalGaussianDistribution]:
        post = self.runner.encode(x.mul(2).sub_(1))  # (B, 3, H, W) in [-1, 1]
        z = choose_latent(post, seeds)
        return to_stored(self.vae, z, self.opts.normalizer, self.opts.scale), post

    def check_finite(self, job: Job, z: torch.Tensor) -> None:
        """A latent with NaN or inf is no latent: that input fails rather than be written (whatever the cause)."""
        bad = int(z.numel() - torch.isfinite(z).sum())
        if bad:
            why = "the --normalize file's scale?" if self.opts.normalizer is not None else f"an overflow in {dtype_name(self.runner.dtype)}?"
            raise InputError(f"{job.input}: its latent has {bad} NaN or infinite values of {z.numel()} ({why}); not written")

    def write(self, job: Job, z: torch.Tensor, meta: LatentMeta, taken: dict, dist: dict, **extra) -> None:
        self.check_finite(job, z)
        doc = job.recipe.document(job.input, taken, {"shape": list(z.shape)})
        guard = write_guard(job.input, job.output, job.seen, self.opts.overwrite)
        self.run.write(job, lambda: write_latent(job.output, z, meta, provenance=doc, before_replace=guard, **dist), shape=list(z.shape), **extra)

    def images(self, batch: list[Prepared]) -> None:
        seeds = [sample_seed(self.opts, p.job) for p in batch]
        z, post = self.latent_of(torch.stack([p.pixels for p in batch]), seeds)
        for i, p in enumerate(batch):
            meta = self.meta(p.job, p.height, p.width, p.original_height, p.original_width, p.size_handling)
            dist = {"mean": post.mean[i], "logvar": post.logvar[i]} if self.opts.save_dist else {}
            self.run.attempt([p.job], self.write, p.job, z[i].cpu(), meta, p.fingerprint, dist)  # one input's bad latent fails it alone

    def video(self, job: Job) -> None:
        taken = fingerprint(job.input)
        stream = open_video(job.input, alpha=self.opts.alpha)
        seed = sample_seed(self.opts, job)
        latents, means, logvars, done = [], [], [], 0
        h = w = 0
        how = ""
        for frames, h, w, how in frame_batches(stream, self.opts.size, pixel_multiple(self.vae), self.batch_size):
            z, post = self.latent_of(torch.stack(frames), frame_seeds(seed, done, len(frames)))  # (T', 3, H, W)
            latents.append(z.cpu())
            if self.opts.save_dist:
                means.append(post.mean.cpu())
                logvars.append(post.logvar.cpu())
            done += len(frames)
        if done == 0:
            raise InputError(f"{job.input}: video has no frames")
        z = torch.cat(latents)  # (T, C, h, w)
        meta = self.meta(job, h, w, stream.height, stream.width, how, fps=stream.fps, frames=done)
        dist = {"mean": torch.cat(means), "logvar": torch.cat(logvars)} if self.opts.save_dist else {}
        self.write(job, z, meta, taken, dist, fps=stream.fps)


def encode_files(runner: Runner, jobs: list[Job], opts: EncodeOptions, on_result=None) -> tuple[list[dict], dict]:
    """Encode every job's input into a latent file; returns (results in input order, summary)."""
    run = Run(jobs, on_result, opts.data_budget)
    enc = Encoder(runner, opts, run)
    try:
        todo = triage(run, jobs, enc.recipe, opts.overwrite)
        say_resize_cost(runner, todo, opts.size, decode=False)
        multiple = pixel_multiple(runner.vae)
        run_batched(run, [j for j in todo if j.kind == "image"], load=lambda j: prepare_image(j, opts, multiple), cost=lambda j: image_cost(j, opts),
                    key=batch_key, batch_size=enc.batch_size, process=enc.images, jobs_of=lambda b: [p.job for p in b], workers=opts.workers)
        for job in todo:
            if job.kind == "video":
                run.attempt([job], enc.video, job)
    finally:
        results = run.close()
    return results, run.summary(results)
