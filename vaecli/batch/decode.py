"""decode: latent files -> images (PNG, JPEG, WebP, TIFF) and videos (mp4, GIF), each carrying its provenance.

A latent is peeked while planning (shape and checked metadata: image or video, which model), then
fingerprinted and read in a loader thread, unscaled with its own recorded factors, decoded in
same-model, same-shape batches and cropped back to the recorded content size. A video latent is
decoded a batch of frames at a time straight into a streaming writer.
"""

from __future__ import annotations

import threading
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..io.hashing import fingerprint
from ..io.images import to_uint8, write_image
from ..io.latents import (
    Latent,
    LatentHeader,
    check_channels,
    check_geometry,
    peek_latent,
    read_latent,
)
from ..io.provenance import read_provenance
from ..io.video import VideoWriter
from ..model import AutoencoderKL
from .freshness import Recipe, write_guard
from .latent_space import SPATIAL, latent_normalizer, stored_geometry, to_raw
from .models import ModelRequest, ModelSource
from .plan import Job, output_path
from .run import DEFAULT_WORKERS, Run, run_batched, triage

BYTES_PER_OUTPUT_PIXEL = 3 * 4 * 3  # float32 RGB decoded, cropped and clamped, then 8-bit


@dataclass
class DecodeOptions:
    fmt: str = "png"  # image format
    video_format: str | None = None  # mp4 | gif; None: gif for GIF sources, else mp4
    lossless_video: bool = False  # mp4: exact RGB pixels (High 4:4:4) instead of yuv420p, which every player plays
    scaled: bool | None = None  # None: from the latent's metadata (foreign latents: scaled)
    overwrite: bool = False
    batch_size: int | None = None
    dtype: str = "float32"  # what the models compute in (part of the recipe)
    workers: int = DEFAULT_WORKERS
    data_budget: int = 1 << 30


def output_suffix(header: LatentHeader, opts: DecodeOptions) -> str:
    if not header.is_video:
        return opts.fmt
    if opts.video_format is not None:
        return opts.video_format
    return "gif" if header.meta is not None and header.meta.source.lower().endswith(".gif") else "mp4"


def name_latent(job: Job, out_dir: Path | None, opts: DecodeOptions) -> None:
    """Plan a latent: peek at it, then OUT/<stem>.<fmt> (beside it: <stem>.decoded.<fmt>)."""
    job.kind = "latent"
    job.header = peek_latent(job.input)
    middle = "" if out_dir is not None else ".decoded"
    job.outputs = (output_path(job.found, out_dir, f"{middle}.{output_suffix(job.header, opts)}"),)


def raw_latent(latent: Latent, vae: AutoencoderKL, scaled: bool | None) -> torch.Tensor:
    """Undo the stored scaling (metadata's factors for our files, the model's for foreign ones), then the
    recorded normaliser and layout (vaecli.batch.latent_space); checked finite."""
    meta = latent.meta
    is_scaled = scaled if scaled is not None else (meta.scaled if meta is not None else True)
    if not is_scaled or (meta is not None and scaled is None and meta.scaling_factor is None):
        raw = latent.tensor
    elif meta is not None and scaled is None:
        raw = latent.tensor / meta.scaling_factor + meta.shift_factor
    else:
        raw = vae.unscale_latents(latent.tensor)
    if meta is not None and (meta.normalizer is not None or (meta.layout or SPATIAL) != SPATIAL):
        raw = to_raw(vae, raw[None] if raw.ndim == 3 else raw, latent_normalizer(meta.normalizer, latent.path), meta.layout or SPATIAL)
        raw = raw[0] if latent.tensor.ndim == 3 else raw  # (C, h, w) or (T, C, h, w) as stored
    if not torch.isfinite(raw).all():
        raise InputError(f"{latent.path}: latent is not finite once unscaled (scaling_factor {meta.scaling_factor if meta else None})")
    return raw


def crop(pixels: torch.Tensor, latent: Latent) -> torch.Tensor:
    """(..., 3, Hp, Wp) in [-1, 1] -> [0, 1] in place (the Runner's output, an inference tensor), cropped back
    to the recorded content size."""
    with torch.inference_mode():
        x = pixels.add_(1).div_(2).clamp_(0, 1)
    return x if latent.meta is None else x[..., : latent.meta.height, : latent.meta.width]


@dataclass
class Loaded:
    job: Job
    latent: Latent
    request: ModelRequest
    fingerprint: dict


class Decoder:
    """Decode jobs with the models a ModelSource gives, under one set of options."""

    def __init__(self, models: ModelSource, opts: DecodeOptions, run: Run):
        self.models, self.opts, self.run = models, opts, run
        self.requests: dict[int, ModelRequest] = {}
        self.encoded_with: dict[int, str] = {}  # id(job) -> sha256 of the weights its latent's provenance names
        self.loading = threading.Lock()  # loader threads share the model cache
        given = models.given
        self.batch_size = opts.batch_size or (given.default_batch_size if given is not None else 4)

    def recipe(self, job: Job) -> Recipe:
        request = self.requests[id(job)] = self.models.request(job.header, job.input)
        doc = read_provenance(job.input)
        recorded = doc.get("model") if isinstance(doc, dict) else None
        if isinstance(recorded, dict) and isinstance(recorded.get("weights_sha256"), str):
            self.encoded_with[id(job)] = recorded["weights_sha256"]
        video = {"pixels": "rgb-lossless" if self.opts.lossless_video else "yuv420p"} if job.output.suffix == ".mp4" else {}
        return Recipe.of(request.identity, output="video" if job.header.is_video else "image",
                         format=job.output.suffix[1:], scaled=self.opts.scaled, dtype=self.opts.dtype, **video)

    def say_other_weights(self, todo: list[Job]) -> None:
        """One warning per (encoder's, decoder's) weights pair that differ among the latents to decode: not an
        error (a fine-tuned decoder is a choice), but never silent (a replaced weights file, a wrong --model)."""
        pairs = Counter()
        for job in todo:
            used = self.requests[id(job)].identity.get("weights_sha256")
            recorded = self.encoded_with.get(id(job))
            if recorded and used and recorded != used:
                pairs[recorded, used] += 1
        for (recorded, used), n in pairs.items():
            warnings.warn(f"{n} latent{'s were' if n > 1 else ' was'} encoded with weights sha256 {recorded[:12]} and {'are' if n > 1 else 'is'} "
                          f"decoded with weights sha256 {used[:12]}: another decoder than the encoder's own; right for a decoder fine-tuned "
                          "for that encoder, wrong for another model's latents (such as the embedded default model's before it was "
                          "retrained): give the encoder's weights with --weights",
                          stacklevel=2)

    def load(self, job: Job) -> Loaded:
        """Fingerprint, read and check one latent, and make sure its model is loaded (loader thread)."""
        taken = fingerprint(job.input)
        latent = read_latent(job.input)
        request = self.requests[id(job)]
        with self.loading:
            vae = self.models.get(request, job.input).vae
        channels, factor = stored_geometry(vae, SPATIAL if latent.meta is None else latent.meta.layout or SPATIAL)
        check_channels(latent, channels)
        check_geometry(job.input, tuple(latent.tensor.shape), latent.meta, factor)
        norm = None if latent.meta is None else latent_normalizer(latent.meta.normalizer, job.input)  # a bad one fails here, not its batch
        if norm is not None and norm.channels != channels:
            raise InputError(f"{job.input}: its recorded normaliser has {norm.channels} channels, the latent {channels}")
        return Loaded(job, latent, request, taken)

    def cost(self, job: Job) -> int:
        h, w = job.header.shape[-2:]
        factor = 8 if job.header.meta is None else max(1, -(-job.header.meta.height // h))
        return BYTES_PER_OUTPUT_PIXEL * h * w * factor * factor

    def images(self, batch: list[Loaded]) -> None:
        runner = self.models.get(batch[0].request, batch[0].job.input)
        z = torch.stack([raw_latent(item.latent, runner.vae, self.opts.scaled) for item in batch])  # (B, C, h, w)
        pixels = runner.decode(z).cpu()
        for item, px in zip(batch, pixels):
            img = to_uint8(crop(px, item.latent))  # (H, W, 3) uint8: a quarter of the float image
            job, results = item.job, {"width": img.shape[1], "height": img.shape[0]}
            doc = job.recipe.document(job.input, item.fingerprint, results)
            guard = write_guard(job.input, job.output, job.seen, self.opts.overwrite)
            self.run.write(job, lambda j=job, im=img, d=doc, g=guard: write_image(im, j.output, self.opts.fmt, provenance=d, before_replace=g),
                           **results)

    def video(self, job: Job) -> None:
        item = self.load(job)
        runner = self.models.get(item.request, job.input)
        raw = raw_latent(item.latent, runner.vae, self.opts.scaled)  # (T, C, h, w)
        meta = item.latent.meta
        fps = meta.fps if meta is not None and meta.fps else 25.0
        results = {"frames": raw.shape[0], "fps": fps}
        doc = job.recipe.document(job.input, item.fingerprint, results)
        guard = write_guard(job.input, job.output, job.seen, self.opts.overwrite)
        with VideoWriter(job.output, fps, doc, guard, lossless=self.opts.lossless_video) as out:
            for start in range(0, raw.shape[0], self.batch_size):
                frames = crop(runner.decode(raw[start : start + self.batch_size]).cpu(), item.latent)
                out.append(to_uint8(f) for f in frames)
        self.run.finish(job, "ok", **results)


def decode_files(models: ModelSource, jobs: list[Job], opts: DecodeOptions, on_result=None) -> tuple[list[dict], dict]:
    """Decode latent files into images (and videos); returns (results in input order, summary)."""
    run = Run(jobs, on_result, opts.data_budget)
    dec = Decoder(models, opts, run)
    try:
        todo = triage(run, jobs, dec.recipe, opts.overwrite)
        dec.say_other_weights(todo)
        run_batched(run, [j for j in todo if not j.header.is_video], load=dec.load, cost=dec.cost,
                    key=lambda item: (item.request.key, tuple(item.latent.tensor.shape)), batch_size=dec.batch_size,
                    process=dec.images, jobs_of=lambda b: [item.job for item in b], workers=opts.workers)
        for job in todo:
            if job.header.is_video:
                run.attempt([job], dec.video, job)
    finally:
        results = run.close()
    return results, run.summary(results)
