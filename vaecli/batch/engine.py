"""Batch work over many files: encode, decode and roundtrip, safe for ten thousand files and a cron job.

The shape of every run: expand the inputs (files, recursive folders, globs) in a deterministic order;
compute each output path up front; skip outputs that are present and fresh; decode input files in a
thread pool ahead of the model; group them by size into batches; write outputs from a writer thread,
each atomically; record a per-file result instead of stopping at the first bad file.

All model calls go through a vaecli.runtime.executor.Runner: the one place for no-grad, dtype
handling, the fp16 safety net and automatic tiling.
"""

from __future__ import annotations

import glob
import json
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..config import VAEConfig
from ..errors import InputError, VaecliError
from ..io.atomic import TMP_PREFIX
from ..io.images import (
    IMAGE_SUFFIXES,
    SizeSpec,
    pad_to_multiple,
    read_image,
    resize_and_crop,
    to_uint8,
    write_image,
)
from ..io.latents import (
    LatentMeta,
    check_channels,
    is_fresh,
    metadata_string,
    read_latent,
    source_fingerprint,
    write_latent,
)
from ..io.video import FFMPEG_SUFFIXES, is_video, open_video, write_video
from ..model import AutoencoderKL, DiagonalGaussianDistribution
from ..quality.metrics import psnr, ssim
from ..runtime.executor import Runner

MEDIA_SUFFIXES = IMAGE_SUFFIXES + FFMPEG_SUFFIXES
_GLOB_CHARS = set("*?[")

# ---------------------------------------------------------------------------------------------------
# Inputs and outputs
# ---------------------------------------------------------------------------------------------------


@dataclass
class Job:
    """One input file and where its output goes; `error` set when it failed before any work."""

    input: Path
    output: Path | None
    error: str | None = None
    result: dict = field(default_factory=dict)


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def expand_inputs(args: Iterable[str], suffixes: tuple[str, ...]) -> list[tuple[Path, Path | None, str | None]]:
    """Each argument -> (file, folder it was found under or None, error or None), sorted per argument.

    Folders are searched recursively for files with `suffixes` (hidden files and vaecli's temporary
    files skipped; captions and other files beside images are ignored). A file named explicitly is
    always tried. A glob is expanded like a list of files. A path that does not exist is an error.
    """
    out: list[tuple[Path, Path | None, str | None]] = []
    seen: set[Path] = set()

    def add(p: Path, root: Path | None, err: str | None = None) -> None:
        key = p.resolve() if err is None else p
        if key not in seen:
            seen.add(key)
            out.append((p, root, err))

    for arg in args:
        path = Path(arg)
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.suffix.lower() in suffixes and p.is_file() and not _is_hidden(p, path):
                    add(p, path)
        elif path.exists():
            add(path, None)
        elif _GLOB_CHARS & set(arg):
            matches = sorted(Path(m) for m in glob.glob(arg, recursive=True))
            files = [m for m in matches if m.is_file() and not m.name.startswith(TMP_PREFIX)]
            if not files:
                add(path, None, f"{arg}: no file matches this pattern")
            for m in files:
                add(m, None)
        else:
            add(path, None, f"{arg}: no such file or folder")
    return out


def plan_jobs(args: Iterable[str], suffixes: tuple[str, ...], out_dir: Path | None, out_suffix: Callable[[Path], str | None]) -> list[Job]:
    """Expand inputs and give each its output path: OUT/<stem><suffix>, folder inputs mirrored under OUT.

    Without OUT the output goes beside its input. `out_suffix(input)` names the output's suffix
    (None: this command writes no file for it). Two inputs that would write the same output: the
    second fails, instead of silently overwriting the first's result.
    """
    jobs, claimed = [], {}
    for path, root, err in expand_inputs(args, suffixes):
        if err is not None:
            jobs.append(Job(path, None, err))
            continue
        suffix = out_suffix(path)
        output = None
        if suffix is not None:
            if out_dir is None:
                output = path.with_name(path.stem + suffix)
            elif root is not None:
                rel = path.relative_to(root)
                output = out_dir / rel.with_name(rel.stem + suffix)
            else:
                output = out_dir / (path.stem + suffix)
        job = Job(path, output)
        if output is not None:
            key = output.resolve()
            if key in claimed:
                job.error = f"{path}: its output {output} is also the output of {claimed[key]}; encode one of them separately"
            elif key == path.resolve():
                job.error = f"{path}: the output would overwrite the input; choose another -o"
            else:
                claimed[key] = path
        jobs.append(job)
    return jobs


# ---------------------------------------------------------------------------------------------------
# Run machinery: prefetch, batching by size, writer thread, results
# ---------------------------------------------------------------------------------------------------


def _prefetch(fn: Callable, items: list, workers: int, ahead: int) -> Iterator[tuple[object, Future]]:
    """Yield (item, future of fn(item)) in order, keeping up to `ahead` items loading in threads."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vaecli-load")
    queue: deque = deque()
    it = iter(items)
    try:
        for item in it:
            queue.append((item, pool.submit(fn, item)))
            if len(queue) >= ahead:
                yield queue.popleft()
        while queue:
            yield queue.popleft()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _batched_by_key(loaded: Iterable[tuple[object, object]], batch_size: int, max_pending: int) -> Iterator[list]:
    """Group (key, item) pairs into lists of one key, at most `batch_size` long.

    A full group is released at once; when too many items wait in partial groups (many distinct
    sizes), the largest partial group goes early, so memory stays bounded and one odd size never
    shrinks the others' batches.
    """
    groups: dict = {}
    pending = 0
    for key, item in loaded:
        groups.setdefault(key, []).append(item)
        pending += 1
        if len(groups[key]) >= batch_size:
            pending -= batch_size
            yield groups.pop(key)
        elif pending > max_pending:
            biggest = max(groups, key=lambda k: len(groups[k]))
            pending -= len(groups[biggest])
            yield groups.pop(biggest)
    yield from groups.values()


STALE_TEMPORARY_S = 3600  # no write takes an hour: an older temporary was left by a killed run


def sweep_stale_temporaries(folders: Iterable[Path]) -> None:
    """Remove temporaries that a kill -9 left in output folders; fresh ones may belong to a live run."""
    cutoff = time.time() - STALE_TEMPORARY_S
    for folder in folders:
        for tmp in folder.glob(f"{TMP_PREFIX}*"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except OSError:  # gone already, or not ours to remove
                pass


class Run:
    """Results in input order, a writer thread, and a callback per finished input (progress, logs)."""

    def __init__(self, jobs: list[Job], on_result: Callable[[dict], None] | None = None, max_queued_writes: int = 16):
        self.jobs = jobs
        self.on_result = on_result or (lambda r: None)
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vaecli-write")
        self.writes: deque[tuple[Job, Future]] = deque()
        self.max_queued_writes = max_queued_writes
        self.started = time.monotonic()

    def finish(self, job: Job, status: str, error: str | None = None, **extra) -> None:
        job.result = {"input": str(job.input), "output": None if job.output is None else str(job.output), "status": status, "error": error, **extra}
        self.on_result(job.result)

    def fail(self, job: Job, err: Exception | str) -> None:
        self.finish(job, "failed", str(err))

    def write(self, job: Job, fn: Callable[[], None], **extra) -> None:
        """Queue an output write; the job is finished (ok or failed) when it lands."""

        def task():
            fn()
            return extra

        self.writes.append((job, self.writer.submit(task)))
        self._drain(block=len(self.writes) > self.max_queued_writes)

    def _drain(self, block: bool) -> None:
        while self.writes and (block or self.writes[0][1].done()):
            job, fut = self.writes.popleft()
            try:
                extra = fut.result()
            except (InputError, OSError, ValueError) as e:
                self.fail(job, e if isinstance(e, InputError) else f"{job.output}: cannot write ({e})")
            else:
                self.finish(job, "ok", **extra)
            block = block and len(self.writes) > self.max_queued_writes // 2

    def close(self) -> list[dict]:
        while self.writes:
            self._drain(block=True)
        self.writer.shutdown(wait=True)
        sweep_stale_temporaries({j.output.parent for j in self.jobs if j.output is not None})
        return [j.result for j in self.jobs]

    def summary(self, results: list[dict]) -> dict:
        return summarize(results, time.monotonic() - self.started)


def summarize(results: list[dict], seconds: float) -> dict:
    """The report's summary: how many inputs, how many ok/skipped/failed, and the seconds taken."""
    counts = {s: sum(r["status"] == s for r in results) for s in ("ok", "skipped", "failed")}
    return {"total": len(results), **counts, "seconds": round(seconds, 3)}


def exit_code(results: list[dict]) -> int:
    return 1 if any(r["status"] == "failed" for r in results) else 0


# ---------------------------------------------------------------------------------------------------
# Encode
# ---------------------------------------------------------------------------------------------------


@dataclass
class EncodeOptions:
    model_name: str | None = None  # registry name the model came from (recorded for decode)
    weights: Path | None = None  # weights file given by path (recorded for decode)
    batch_size: int | None = None
    size: SizeSpec = field(default_factory=SizeSpec)
    alpha: str = "white"
    scale: bool = True
    sample: bool = False
    seed: int = 0
    save_dist: bool = False
    overwrite: bool = False
    workers: int = 4


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


def prepare_frame(x: torch.Tensor, opts: EncodeOptions, factor: int) -> tuple[torch.Tensor, int, int, str]:
    """(3, H, W) in [0, 1] -> (padded pixels, content height, content width, description)."""
    try:
        x, how = resize_and_crop(x, opts.size, factor)
    except ValueError as e:
        raise InputError(str(e)) from None
    h, w = x.shape[-2:]
    x, pad = pad_to_multiple(x, factor)
    return x, h, w, "; ".join(s for s in (how, pad) if s) or "none"


def _prepare_image(job: Job, opts: EncodeOptions, factor: int, fingerprint: bool) -> Prepared:
    x = read_image(job.input, alpha=opts.alpha)
    oh, ow = x.shape[-2:]
    try:
        px, h, w, how = prepare_frame(x, opts, factor)
    except InputError as e:
        raise InputError(f"{job.input}: {e}") from None
    return Prepared(job, px, h, w, oh, ow, how, source_fingerprint(job.input) if fingerprint else {})


def _latent_seed(opts: EncodeOptions, job: Job) -> int | None:
    """With --sample: a per-file seed from --seed and the file's name, independent of batch order."""
    if not opts.sample:
        return None
    return (opts.seed * 1_000_003 + zlib.crc32(job.input.name.encode())) % (2**63)


def _choose_latent(post: DiagonalGaussianDistribution, seeds: list[int | None]) -> torch.Tensor:
    """Mode, or a per-item reproducible sample drawn on the CPU (the same on every device)."""
    z = post.mode()
    if seeds[0] is None:
        return z
    eps = torch.stack([torch.randn(z.shape[1:], generator=torch.Generator().manual_seed(s)) for s in seeds])  # (B, C, h, w)
    return post.mean + post.std * eps.to(z.device)


def _recipe(vae: AutoencoderKL, opts: EncodeOptions) -> dict:
    """The metadata fields that say how a latent was made; an output made otherwise is redone."""
    cfg = vae.config
    preprocess = {
        "resize": None if opts.size.width is None else [opts.size.width, opts.size.height],
        "center_crop": opts.size.center_crop,
        "alpha": opts.alpha,
        "seed": opts.seed if opts.sample else None,
    }
    return {
        "model": opts.model_name or cfg.name,
        "config": cfg.to_json(),
        "scaling_factor": cfg.scaling_factor,
        "shift_factor": cfg.shift_factor,
        "scaled": opts.scale and cfg.scaling_factor is not None,
        "posterior": "sample" if opts.sample else "mode",
        "weights": None if opts.weights is None else str(Path(opts.weights).resolve()),
        "preprocess": json.dumps(preprocess, sort_keys=True),
    }


def _recipe_strings(vae: AutoencoderKL, opts: EncodeOptions) -> dict[str, str | None]:
    return {k: None if v is None else metadata_string(v) for k, v in _recipe(vae, opts).items()}


def _meta(vae: AutoencoderKL, opts: EncodeOptions, source: Path, h, w, oh, ow, how, seed, fingerprint, **video) -> LatentMeta:
    return LatentMeta(
        **_recipe(vae, opts),
        height=h,
        width=w,
        original_height=oh,
        original_width=ow,
        size_handling=how,
        seed=seed,
        source=str(source),
        vaecli_version=__version__,
        **fingerprint,
        **video,
    )


def _encode_batch(runner: Runner, opts: EncodeOptions, batch: list[Prepared], run: Run) -> None:
    vae = runner.vae
    x = torch.stack([p.pixels for p in batch]) * 2 - 1  # (B, 3, H, W) in [-1, 1]
    post = runner.encode(x)
    seeds = [_latent_seed(opts, p.job) for p in batch]
    z = _choose_latent(post, seeds)
    if opts.scale:
        z = vae.scale_latents(z)
    for i, p in enumerate(batch):
        meta = _meta(vae, opts, p.job.input, p.height, p.width, p.original_height, p.original_width, p.size_handling, seeds[i], p.fingerprint)
        dist = {"mean": post.mean[i], "logvar": post.logvar[i]} if opts.save_dist else {}
        latent = z[i].cpu()
        run.write(p.job, lambda o=p.job.output, t=latent, m=meta, d=dist: write_latent(o, t, m, **d), shape=list(latent.shape))


def _frame_batches(stream, opts: EncodeOptions, factor: int, batch_size: int) -> Iterator[tuple[list[torch.Tensor], int, int, str]]:
    """A video's frames prepared like images, in batches: (frames, content h, content w, size handling)."""
    frames: list[torch.Tensor] = []
    for frame in stream.frames:
        px, h, w, how = prepare_frame(frame, opts, factor)
        frames.append(px)
        if len(frames) == batch_size:
            yield frames, h, w, how
            frames = []
    if frames:
        yield frames, h, w, how


def _encode_video(runner: Runner, opts: EncodeOptions, job: Job, batch_size: int, run: Run) -> None:
    vae = runner.vae
    fingerprint = source_fingerprint(job.input)  # before reading: a change while encoding shows as stale next time
    stream = open_video(job.input, alpha=opts.alpha)
    factor = vae.downsample_factor
    seed = _latent_seed(opts, job)
    latents, means, logvars, how, h, w = [], [], [], "", 0, 0

    def flush(frames: list[torch.Tensor]) -> None:
        post = runner.encode(torch.stack(frames) * 2 - 1)  # (T', 3, H, W)
        done = sum(t.shape[0] for t in latents)  # frames encoded so far: frame k is drawn with seed + k
        eps_seeds = [None if seed is None else seed + done + i for i in range(len(frames))]
        z = _choose_latent(post, eps_seeds)
        latents.append((vae.scale_latents(z) if opts.scale else z).cpu())
        if opts.save_dist:
            means.append(post.mean.cpu())
            logvars.append(post.logvar.cpu())

    for frames, h, w, how in _frame_batches(stream, opts, factor, batch_size):
        flush(frames)
    if not latents:
        raise InputError(f"{job.input}: video has no frames")
    z = torch.cat(latents)  # (T, C, h, w)
    meta = _meta(vae, opts, job.input, h, w, stream.height, stream.width, how, seed, fingerprint, fps=stream.fps, frames=z.shape[0])
    dist = {"mean": torch.cat(means), "logvar": torch.cat(logvars)} if opts.save_dist else {}
    run.write(job, lambda: write_latent(job.output, z, meta, **dist), shape=list(z.shape), fps=stream.fps)


def _pending(jobs: list[Job], run: Run, overwrite: bool, fresh: Callable[[Job], bool]) -> list[Job]:
    """Report failed-at-planning and skipped jobs; return those with work to do."""
    todo = []
    for job in jobs:
        if job.error is not None:
            run.fail(job, job.error)
        elif not overwrite and job.output is not None and job.output.exists() and fresh(job):
            run.finish(job, "skipped")
        else:
            todo.append(job)
    return todo


def _split_media(todo: list[Job], run: Run) -> tuple[list[Job], list[Job]]:
    images, videos = [], []
    for job in todo:
        suffix = job.input.suffix.lower()
        if suffix not in MEDIA_SUFFIXES:
            run.fail(job, f"{job.input}: not an image or video (unknown suffix {suffix or 'none'})")
        elif is_video(job.input):
            videos.append(job)
        else:
            images.append(job)
    return images, videos


def _input_failure(job: Job, e: Exception) -> InputError:
    """Any error while reading one input is that input's failure, not the run's."""
    if isinstance(e, InputError):
        return e
    return InputError(f"{job.input}: cannot read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})")


def _run_images(todo: list[Job], load: Callable[[Job], Prepared], batch_size: int, workers: int, run: Run, process: Callable[[list[Prepared]], None]) -> None:
    def loaded() -> Iterator[tuple[tuple, Prepared]]:
        for job, fut in _prefetch(load, todo, workers, ahead=2 * batch_size + workers):
            try:
                p = fut.result()
            except Exception as e:  # noqa: BLE001 - one odd file fails alone, whatever the reader raised
                run.fail(job, _input_failure(job, e))
                continue
            yield (tuple(p.pixels.shape), p.height, p.width), p  # same padded and same content size

    for batch in _batched_by_key(loaded(), batch_size, max_pending=4 * batch_size):
        try:
            process(batch)
        except InputError as e:
            for p in batch:
                run.fail(p.job, e)


def _run_videos(videos: list[Job], run: Run, work: Callable[[Job], None]) -> None:
    for job in videos:
        try:
            work(job)
        except InputError as e:
            run.fail(job, e)


def encode_files(runner: Runner, jobs: list[Job], opts: EncodeOptions, on_result=None) -> tuple[list[dict], dict]:
    """Encode every job's input into a latent file; returns (results in input order, summary)."""
    vae = runner.vae
    run = Run(jobs, on_result)
    batch_size = opts.batch_size or runner.default_batch_size
    try:
        recipe = _recipe_strings(vae, opts)
        todo = _pending(jobs, run, opts.overwrite, lambda j: is_fresh(j.output, j.input, recipe))
        images, videos = _split_media(todo, run)
        factor = vae.downsample_factor
        _run_images(images, lambda j: _prepare_image(j, opts, factor, True), batch_size, opts.workers, run, lambda b: _encode_batch(runner, opts, b, run))
        _run_videos(videos, run, lambda j: _encode_video(runner, opts, j, batch_size, run))
    finally:
        results = run.close()
    return results, run.summary(results)


# ---------------------------------------------------------------------------------------------------
# Decode
# ---------------------------------------------------------------------------------------------------


@dataclass
class DecodeOptions:
    fmt: str = "png"  # image format
    video_format: str | None = None  # mp4 | gif; None: gif for GIF sources, else mp4
    scaled: bool | None = None  # None: from the latent's metadata (foreign latents: scaled)
    overwrite: bool = False
    batch_size: int | None = None
    workers: int = 4


class ModelSource:
    """Which model decodes a latent: the one given by flags, else the one its metadata names (cached)."""

    def __init__(self, given: Runner | None, load: Callable[..., Runner]):
        self.given = given
        self.load = load  # load_vae with the run's device and dtype bound, wrapped in a Runner
        self.cache: dict[tuple, Runner] = {}

    def key(self, meta: LatentMeta | None, path: Path) -> tuple:
        if self.given is not None:
            return ("given",)
        if meta is None:
            raise InputError(f"{path}: not a vaecli latent; say which model made it with --model or --config/--weights")
        if meta.weights is not None:
            return ("weights", meta.weights, meta.config)
        if meta.model:
            return ("model", meta.model)
        raise InputError(f"{path}: its metadata names no model or weights; pass --model or --weights")

    def get(self, key: tuple, path: Path) -> Runner:
        if key == ("given",):
            return self.given
        if key not in self.cache:
            try:
                if key[0] == "weights":
                    if not Path(key[1]).is_file():
                        raise InputError(f"{path}: the weights it was made with ({key[1]}) are gone; pass --weights or --model")
                    self.cache[key] = self.load(config=VAEConfig.from_json(key[2], f"{path} metadata"), weights=key[1])
                else:
                    self.cache[key] = self.load(key[1])
            except VaecliError as e:
                if isinstance(e, InputError):
                    raise
                raise InputError(f"{path}: cannot load its model: {e}") from None
        return self.cache[key]


def _raw_latent(latent, vae: AutoencoderKL, scaled: bool | None) -> torch.Tensor:
    """Undo the stored scaling: metadata's factors for our files, the model's for foreign ones."""
    meta = latent.meta
    is_scaled = scaled if scaled is not None else (meta.scaled if meta is not None else True)
    if not is_scaled:
        return latent.tensor
    if meta is not None and scaled is None:
        if meta.scaling_factor is None:
            return latent.tensor
        return latent.tensor / meta.scaling_factor + meta.shift_factor
    return vae.unscale_latents(latent.tensor)


def _crop(pixels: torch.Tensor, meta: LatentMeta | None) -> torch.Tensor:
    """(..., 3, Hp, Wp) in [-1, 1] -> [0, 1], cropped back to the recorded content size."""
    x = ((pixels + 1) / 2).clamp(0, 1)
    return x if meta is None else x[..., : meta.height, : meta.width]


def _load_latent_for_decode(job: Job, models: ModelSource):
    latent = read_latent(job.input)
    return latent, models.key(latent.meta, job.input)


def _video_output(job: Job, latent, opts: DecodeOptions) -> Path:
    meta = latent.meta
    fmt = opts.video_format or ("gif" if meta is not None and meta.source.lower().endswith(".gif") else "mp4")
    return job.output.with_suffix(f".{fmt}")


def _decoded_is_newer(job: Job) -> bool:
    """A decoded image older than its latent is stale (the latent was re-encoded since)."""
    return job.output.stat().st_mtime_ns >= job.input.stat().st_mtime_ns


def decode_files(models: ModelSource, jobs: list[Job], opts: DecodeOptions, on_result=None) -> tuple[list[dict], dict]:
    """Decode latent files into images (and videos); returns (results in input order, summary)."""
    run = Run(jobs, on_result)
    try:
        todo = _pending(jobs, run, opts.overwrite, _decoded_is_newer)
        batch_size = opts.batch_size or (models.given.default_batch_size if models.given is not None else 4)

        def loaded():
            for job, fut in _prefetch(lambda j: _load_latent_for_decode(j, models), todo, opts.workers, ahead=2 * batch_size):
                try:
                    latent, key = fut.result()
                    runner = models.get(key, job.input)
                    check_channels(latent, runner.vae.latent_channels)
                except Exception as e:  # noqa: BLE001 - one odd file fails alone, whatever the reader raised
                    run.fail(job, _input_failure(job, e))
                    continue
                if latent.is_video:
                    _decode_video(runner, job, latent, opts, batch_size, run)
                    continue
                yield (key, tuple(latent.tensor.shape)), (job, latent, runner)

        for batch in _batched_by_key(loaded(), batch_size, max_pending=4 * batch_size):
            runner = batch[0][2]
            z = torch.stack([_raw_latent(lat, runner.vae, opts.scaled) for _, lat, _ in batch])  # (B, C, h, w)
            pixels = runner.decode(z).cpu()
            for (job, lat, _), px in zip(batch, pixels):
                img = _crop(px, lat.meta)
                run.write(job, lambda o=job.output, im=img: write_image(im, o, opts.fmt), width=img.shape[-1], height=img.shape[-2])
    finally:
        results = run.close()
    return results, run.summary(results)


def _decode_video(runner: Runner, job: Job, latent, opts: DecodeOptions, batch_size: int, run: Run) -> None:
    vae = runner.vae
    job.output = output = _video_output(job, latent, opts)
    if output.exists() and not opts.overwrite and _decoded_is_newer(job):
        run.finish(job, "skipped")
        return
    raw = _raw_latent(latent, vae, opts.scaled)  # (T, C, h, w)
    frames = []  # uint8 (H, W, 3): a quarter of the memory of float frames
    for start in range(0, raw.shape[0], batch_size):
        frames.extend(to_uint8(f) for f in _crop(runner.decode(raw[start : start + batch_size]).cpu(), latent.meta))
    fps = latent.meta.fps if latent.meta is not None and latent.meta.fps else 25.0
    run.write(job, lambda: write_video(frames, output, fps), frames=len(frames), fps=fps)


# ---------------------------------------------------------------------------------------------------
# Roundtrip
# ---------------------------------------------------------------------------------------------------


@dataclass
class RoundtripOptions:
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    save: bool = False  # write reconstructions to the planned outputs
    compare: bool = False  # write side-by-side input | reconstruction images
    lpips: Callable | None = None  # (B,3,H,W) [-1,1] pairs -> (B,) distances


def _metrics(x: torch.Tensor, y: torch.Tensor, lpips_model) -> dict[str, torch.Tensor]:
    """(B, 3, H, W) in [0, 1] pairs -> per-item metrics (float64, CPU), computed on y's (the model's) device."""
    x = x.to(y.device)
    m = {"psnr": psnr(x, y), "ssim": ssim(x, y)}
    if lpips_model is not None:
        with torch.inference_mode():
            m["lpips"] = lpips_model(x * 2 - 1, y * 2 - 1).flatten()
    return {k: v.double().cpu() for k, v in m.items()}


def _side_by_side(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, y], dim=-1)  # (3, H, W) twice -> (3, H, 2W)


def _compare_path(output: Path) -> Path:
    return output.with_name(output.stem + ".compare.png")


def _roundtrip_batch(runner: Runner, opts: RoundtripOptions, batch: list[Prepared], run: Run) -> None:
    x = torch.stack([p.pixels for p in batch])  # (B, 3, H, W) in [0, 1], same padded size
    post = runner.encode(x * 2 - 1)
    z = _choose_latent(post, [_latent_seed(opts.encode, p.job) for p in batch])
    h, w = batch[0].height, batch[0].width  # same padded size and same content size within a batch
    y = ((runner.decode(z)[..., :h, :w] + 1) / 2).clamp(0, 1)  # on the model's device
    x = x[..., :h, :w]
    metrics = _metrics(x, y, opts.lpips)
    y = y.cpu()
    for i, p in enumerate(batch):
        values = {k: float(v[i]) for k, v in metrics.items()}
        _finish_roundtrip(p.job, x[i], y[i], values, opts, run)


def _finish_roundtrip(job: Job, x: torch.Tensor, y: torch.Tensor, values: dict, opts: RoundtripOptions, run: Run) -> None:
    if not opts.save and not opts.compare:
        run.finish(job, "ok", **values)
        return

    def save():
        if opts.save:
            write_image(y, job.output)
        if opts.compare:
            write_image(_side_by_side(x, y), _compare_path(job.output))

    run.write(job, save, **values)


def _roundtrip_video(runner: Runner, opts: RoundtripOptions, job: Job, batch_size: int, run: Run) -> None:
    vae = runner.vae
    stream = open_video(job.input, alpha=opts.encode.alpha)
    seed = _latent_seed(opts.encode, job)
    sums: dict[str, float] = {}
    recon, n = [], 0

    def flush(frames):  # reads the batch's content size h, w bound by the loop below
        nonlocal n
        x = torch.stack(frames)  # (T', 3, Hp, Wp)
        seeds = [None if seed is None else seed + n + i for i in range(len(frames))]  # as encode draws them
        z = _choose_latent(runner.encode(x * 2 - 1), seeds)
        y = ((runner.decode(z)[..., :h, :w] + 1) / 2).clamp(0, 1)  # on the model's device
        for k, v in _metrics(x[..., :h, :w], y, opts.lpips).items():
            sums[k] = sums.get(k, 0.0) + float(v.sum())
        n += len(frames)
        if opts.save:
            recon.extend(to_uint8(f) for f in y.cpu())

    for frames, h, w, _ in _frame_batches(stream, opts.encode, vae.downsample_factor, batch_size):
        flush(frames)
    if n == 0:
        raise InputError(f"{job.input}: video has no frames")
    values = {k: v / n for k, v in sums.items()} | {"frames": n}
    if opts.save:
        out = job.output.with_suffix(".gif" if job.input.suffix.lower() == ".gif" else ".mp4")
        job.output = out
        run.write(job, lambda: write_video(recon, out, stream.fps), **values)
    else:
        run.finish(job, "ok", **values)


def roundtrip_files(runner: Runner, jobs: list[Job], opts: RoundtripOptions, on_result=None) -> tuple[list[dict], dict]:
    """Encode + decode each input and measure PSNR/SSIM (and LPIPS); optionally save reconstructions."""
    vae = runner.vae
    run = Run(jobs, on_result)
    eo = opts.encode
    batch_size = eo.batch_size or runner.default_batch_size
    try:
        todo = _pending(jobs, run, overwrite=True, fresh=lambda j: False)  # metrics are always measured anew
        images, videos = _split_media(todo, run)
        factor = vae.downsample_factor
        _run_images(images, lambda j: _prepare_image(j, eo, factor, False), batch_size, eo.workers, run, lambda b: _roundtrip_batch(runner, opts, b, run))
        _run_videos(videos, run, lambda j: _roundtrip_video(runner, opts, j, batch_size, run))
    finally:
        results = run.close()
    return results, with_metric_means(run.summary(results), results)


def with_metric_means(summary: dict, results: list[dict]) -> dict:
    """`summary` plus mean_psnr/mean_ssim/mean_lpips over the inputs that were measured."""
    for k in ("psnr", "ssim", "lpips"):
        vals = [r[k] for r in results if r.get(k) is not None and r["status"] == "ok"]
        if vals:
            summary[f"mean_{k}"] = sum(vals) / len(vals)
    return summary
