"""roundtrip: encode + decode each input and measure PSNR, SSIM (and LPIPS); with -o, save the reconstructions.

Pixels are prepared exactly as encode prepares them (vaecli.batch.encode). A saved reconstruction
carries its metrics in its provenance: a rerun whose reconstruction is up to date reports them as
`skipped` without running the model; anything else about it (source, model, options) changed and
it is measured and written again. Without -o nothing is written and every run measures anew.
Videos stream a batch of frames at a time; their metrics are means over frames.

With rFID (`ReconstructionFid`) or a per-image observer (the HTML report's gallery), every input's
pixels are needed: no reconstruction is reused, every input is measured anew.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io.hashing import fingerprint
from ..io.images import to_uint8, write_image
from ..io.video import VideoWriter, is_video, open_video
from ..quality.fid import ReconstructionFid
from ..quality.metrics import psnr, ssim
from ..runtime.executor import Runner
from .encode import (
    BYTES_PER_PIXEL_HELD,
    EncodeOptions,
    Prepared,
    batch_key,
    choose_latent,
    frame_batches,
    frame_seeds,
    image_cost,
    prepare_image,
    sample_seed,
    shaping_options,
)
from .freshness import Recipe, write_guard
from .models import dtype_name
from .plan import Job, output_path
from .report import with_metric_means
from .run import Run, run_batched, triage
from .workload import say_resize_cost

NEVER_RECORDED = "measured anew"  # a result field no provenance holds: as `needed`, no output counts as up to date
LPIPS_BYTES_PER_PIXEL = 1024  # VGG16's five taps for both images in float32 (about 912 B per pixel), with some slack


@dataclass
class RoundtripOptions:
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    compare: bool = False  # also write side-by-side input | reconstruction images
    lpips: Callable | None = None  # (B,3,H,W) [-1,1] pairs -> (B,) distances
    rfid: ReconstructionFid | None = None  # streams Inception features of inputs and reconstructions
    observe: Callable | None = None  # (job, input (3,h,w), reconstruction (3,h,w) in [0, 1] on the CPU, metrics) per image

    @property
    def measures_all(self) -> bool:
        """Whether the run needs every input's pixels (rFID, a gallery), so up-to-date outputs are redone."""
        return self.rfid is not None or self.observe is not None


def compare_path(output: Path) -> Path:
    return output.with_name(output.stem + ".compare.png")


def name_roundtrip(job: Job, out_dir: Path | None, compare: bool) -> None:
    """Plan a media input: OUT/<stem>.png (+ <stem>.compare.png), a video OUT/<stem>.mp4|.gif; nothing without -o."""
    job.kind = "video" if is_video(job.input) else "image"
    if out_dir is None:
        return
    if job.kind == "video":
        job.outputs = (output_path(job.found, out_dir, ".gif" if job.input.suffix.lower() == ".gif" else ".mp4"),)
    else:
        recon = output_path(job.found, out_dir, ".png")
        job.outputs = (recon, compare_path(recon)) if compare else (recon,)


def lpips_within(x: torch.Tensor, y: torch.Tensor, model: Callable, budget: int | None, names: list[str]) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] pairs -> (B,) LPIPS, float64 on the CPU.

    LPIPS holds VGG16's activations of the whole image: the batch goes at once when it fits
    `budget`, else image by image, and an image that alone would not fit gets NaN (null) and a
    warning naming it (`names`) instead of exceeding --max-memory.
    """
    need = x.shape[-2] * x.shape[-1] * LPIPS_BYTES_PER_PIXEL
    with torch.inference_mode():
        if budget is None or need * x.shape[0] <= budget:
            return model(x * 2 - 1, y * 2 - 1).flatten().double().cpu()
        values = torch.full((x.shape[0],), math.nan, dtype=torch.float64)
        for i in range(x.shape[0]):
            if need <= budget:
                values[i] = float(model(x[i : i + 1] * 2 - 1, y[i : i + 1] * 2 - 1))
            else:
                warnings.warn(f"{names[i]}: LPIPS skipped, it would need about {need / 2**30:.1f} GiB of a {budget / 2**30:.1f} GiB budget")
    return values


def metrics(x: torch.Tensor, y: torch.Tensor, lpips_model, lpips_budget: int | None = None, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """(B, 3, H, W) in [0, 1] pairs -> per-item metrics (float64, CPU), computed on y's (the model's) device.

    PSNR and SSIM run in bands of rows (vaecli.quality.metrics); LPIPS within `lpips_budget`.
    """
    x = x.to(y.device)
    m = {"psnr": psnr(x, y).double().cpu(), "ssim": ssim(x, y).double().cpu()}
    if lpips_model is not None:
        m["lpips"] = lpips_within(x, y, lpips_model, lpips_budget, names or ["an input"] * x.shape[0])
    return m


class Roundtripper:
    """Roundtrip jobs on one model under one set of options."""

    def __init__(self, runner: Runner, opts: RoundtripOptions, run: Run):
        self.runner, self.opts, self.run = runner, opts, run
        self.eo = opts.encode
        self.batch_size = self.eo.batch_size or runner.default_batch_size
        self.needed = ("psnr", "ssim") + (("lpips",) if opts.lpips is not None else ())
        if opts.measures_all:
            self.needed += (NEVER_RECORDED,)
        self.lpips_budget = runner.memory.budget(runner.device)  # LPIPS runs after the model, in its memory
        self.model_seconds = 0.0  # in the model's encode and decode calls (compare's images/s)

    def recipe(self, job: Job) -> Recipe:
        return Recipe.of(self.eo.model_identity, output="reconstruction", **shaping_options(self.eo), sample_seed=sample_seed(self.eo, job),
                         compare=self.opts.compare, dtype=dtype_name(self.runner.dtype))

    def reconstruct(self, x: torch.Tensor, seeds: list[int | None], h: int, w: int) -> torch.Tensor:
        """(B, 3, Hp, Wp) in [0, 1] -> the reconstruction's content (B, 3, h, w) in [0, 1], on the model's device."""
        started = time.perf_counter()
        z = choose_latent(self.runner.encode(x.mul(2).sub_(1)), seeds)
        with torch.inference_mode():  # in place: the decoder's output is ours (an inference tensor)
            y = self.runner.decode(z)[..., :h, :w].add_(1).div_(2).clamp_(0, 1)
        if y.device.type == "cuda":
            torch.cuda.synchronize(y.device)  # the calls' time, not their queueing
        self.model_seconds += time.perf_counter() - started
        return y

    def images(self, batch: list[Prepared]) -> None:
        h, w = batch[0].height, batch[0].width  # one padded size and one content size per batch
        x = torch.stack([p.pixels for p in batch])  # (B, 3, Hp, Wp)
        y = self.reconstruct(x, [sample_seed(self.eo, p.job) for p in batch], h, w)
        x = x[..., :h, :w]
        values = metrics(x, y, self.opts.lpips, self.lpips_budget, [str(p.job.input) for p in batch])
        if self.opts.rfid is not None:
            self.opts.rfid.update(x, y)
        y = y.cpu()
        for i, p in enumerate(batch):
            measured = {k: float(v[i]) for k, v in values.items()}
            if self.opts.observe is not None:
                self.opts.observe(p.job, x[i], y[i], measured)
            self.finish(p, x[i], y[i], measured)

    def finish(self, p: Prepared, x: torch.Tensor, y: torch.Tensor, values: dict) -> None:
        job = p.job
        if not job.outputs:
            self.run.finish(job, "ok", **values)
            return
        doc = job.recipe.document(job.input, p.fingerprint, values)
        recon = to_uint8(y)  # (H, W, 3)
        side = np.concatenate([to_uint8(x), recon], axis=1) if self.opts.compare else None  # (H, 2W, 3)

        def save() -> None:
            for out, img in zip(job.outputs, (recon, side)):
                write_image(img, out, provenance=doc, before_replace=write_guard(job.input, out, job.seen, self.eo.overwrite))

        self.run.write(job, save, **values)

    def video(self, job: Job) -> None:
        taken = fingerprint(job.input)
        stream = open_video(job.input, alpha=self.eo.alpha)
        seed = sample_seed(self.eo, job)
        sums: dict[str, float] = {}
        n = 0
        guard = write_guard(job.input, job.output, job.seen, self.eo.overwrite) if job.outputs else None
        writer = VideoWriter(job.output, stream.fps, before_replace=guard) if job.outputs else _Discard()
        with writer as out:
            for frames, h, w, _ in frame_batches(stream, self.eo.size, self.runner.vae.downsample_factor, self.batch_size):
                x = torch.stack(frames)  # (T', 3, Hp, Wp)
                y = self.reconstruct(x, frame_seeds(seed, n, len(frames)), h, w)
                for k, v in metrics(x[..., :h, :w], y, self.opts.lpips, self.lpips_budget, [str(job.input)] * len(frames)).items():
                    sums[k] = sums.get(k, 0.0) + float(v.sum())
                if self.opts.rfid is not None:
                    self.opts.rfid.update(x[..., :h, :w], y)
                n += len(frames)
                out.append(to_uint8(f) for f in y.cpu())
            if n == 0:
                raise InputError(f"{job.input}: video has no frames")
            values = {k: v / n for k, v in sums.items()} | {"frames": n}
            out.provenance = job.recipe.document(job.input, taken, values)
        self.run.finish(job, "ok", **values)


class _Discard:
    """A VideoWriter stand-in for a roundtrip without -o: frames are measured, not kept."""

    provenance = None

    def __enter__(self) -> "_Discard":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def append(self, frames) -> None:
        pass


def roundtrip_files(runner: Runner, jobs: list[Job], opts: RoundtripOptions, on_result=None) -> tuple[list[dict], dict]:
    """Encode + decode each input and measure it; returns (results in input order, summary with metric means)."""
    eo = opts.encode
    run = Run(jobs, on_result, eo.data_budget)
    rt = Roundtripper(runner, opts, run)
    try:
        todo = triage(run, jobs, rt.recipe, eo.overwrite, rt.needed)
        say_resize_cost(runner, todo, eo.size, decode=True)
        factor = runner.vae.downsample_factor
        run_batched(run, [j for j in todo if j.kind == "image"], load=lambda j: prepare_image(j, eo, factor),
                    cost=lambda j: image_cost(j, eo, 2 * BYTES_PER_PIXEL_HELD), key=batch_key, batch_size=rt.batch_size,
                    process=rt.images, jobs_of=lambda b: [p.job for p in b], workers=eo.workers)
        for job in todo:
            if job.kind == "video":
                run.attempt([job], rt.video, job)
    finally:
        results = run.close()
    summary = with_metric_means(run.summary(results), results) | {"model_seconds": round(rt.model_seconds, 3)}
    if opts.rfid is not None:
        summary |= opts.rfid.summary()
    return results, summary
