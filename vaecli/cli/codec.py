"""`vaecli encode`, `decode` and `roundtrip`: parse options, call vaecli.batch, report results.

Results go to stdout (a summary line or table, or one JSON document with --json); progress, per-file
errors and warnings go to stderr. Torch is imported only inside the commands, so --help stays fast.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import (
    AllowPickle,
    Alpha,
    AlphaOpt,
    BatchSize,
    CenterCrop,
    Config,
    Device,
    Dtype,
    DtypeOpt,
    ImageFormat,
    Json,
    MaxMemory,
    Model,
    Output,
    Overwrite,
    Quiet,
    Resize,
    VideoFormat,
    Weights,
)

Inputs = Annotated[list[str], typer.Argument(metavar="INPUT...", help="Image/video files, folders (searched recursively) or globs.")]
NoScale = Annotated[bool, typer.Option("--no-scale", help="Store raw latents instead of scaling_factor * (z - shift_factor).")]
SaveDist = Annotated[bool, typer.Option("--save-dist", help="Also store the posterior's `mean` and `logvar` tensors.")]
Sample = Annotated[bool, typer.Option("--sample", help="Store a sample of the posterior instead of its mode (see --seed).")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for --sample; each file's draw depends only on this and its name.")]


# ---------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------


class Reporter:
    """Progress bar on a terminal (never with --quiet/--json), one stderr line per failed input."""

    def __init__(self, total: int, verb: str, json_mode: bool, quiet: bool):
        from rich.console import Console

        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.progress = None
        if total and self.err.is_terminal and not quiet and not json_mode:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn(verb), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=self.err, transient=True
            )
            self.task = self.progress.add_task(verb, total=total)

    def __enter__(self) -> "Reporter":
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, result: dict) -> None:
        if result["status"] == "failed":
            self.err.print(f"failed: {result['error']}", markup=False)
        if self.progress is not None:
            self.progress.advance(self.task)


@contextlib.contextmanager
def plain_warnings():
    """Warnings as one `Warning: ...` line on stderr, not Python's file:line form."""
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"Warning: {message}", file=sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


def _finite(value):
    """JSON has no NaN/inf: a PSNR of identical images (inf) or SSIM of a tiny image (NaN) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def print_json(document: dict) -> None:
    sys.stdout.write(json.dumps(_finite(document), indent=2) + "\n")


def _summary_line(verb: str, summary: dict) -> str:
    return f"{verb} {summary['ok']} ok, {summary['skipped']} skipped, {summary['failed']} failed of {summary['total']} in {summary['seconds']:.1f} s"


def emit(results: list[dict], summary: dict, verb: str, json_mode: bool, quiet: bool) -> int:
    from ..batch.engine import exit_code

    if json_mode:
        print_json({"results": results, "summary": summary})
    elif not quiet:
        print(_summary_line(verb, summary))
    return exit_code(results)


def _load(model, config, weights, device, dtype, allow_pickle, max_memory):
    """The model as a Runner under the --max-memory policy."""
    from ..api import load_vae
    from ..runtime.executor import Runner
    from ..runtime.memory import MemoryPolicy

    vae = load_vae(model, config=config, weights=weights, device=device, dtype=dtype.value, allow_pickle=allow_pickle)
    return Runner(vae, MemoryPolicy(max_memory))


def _size_spec(resize: str | None, center_crop: bool):
    from ..io.images import SizeSpec

    try:
        return SizeSpec.parse(resize, center_crop)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--resize") from None


def _exit_code(results: list[dict]) -> int:
    from ..batch.engine import exit_code

    return exit_code(results)


# ---------------------------------------------------------------------------------------------------
# encode
# ---------------------------------------------------------------------------------------------------


def encode(
    inputs: Inputs,
    output: Output = None,
    model: Model = None,
    config: Config = None,
    weights: Weights = None,
    device: Device = "auto",
    dtype: DtypeOpt = Dtype.auto,
    batch_size: BatchSize = None,
    max_memory: MaxMemory = None,
    no_scale: NoScale = False,
    save_dist: SaveDist = False,
    sample: Sample = False,
    seed: Seed = 0,
    resize: Resize = None,
    center_crop: CenterCrop = False,
    alpha: AlphaOpt = Alpha.white,
    overwrite: Overwrite = False,
    json_: Json = False,
    quiet: Quiet = False,
    allow_pickle: AllowPickle = False,
) -> int:
    """Encode images and videos into latent files (.safetensors with tensor `latent`).

    a/b.png -> OUT/b.safetensors ([C,h,w]); a video -> [T,C,h,w] with its fps. Folder inputs keep their relative paths under OUT; without -o each latent goes beside its input. Sizes that are not a multiple of the model's downsampling factor are padded (reflect) and the original size recorded, so decode returns the input's exact size. Existing up-to-date outputs are skipped (one whose source changed, or that another model or other options made, is redone); every file is written atomically, so a rerun after Ctrl-C or a crash completes exactly what is missing. Animated GIFs are videos; single-frame GIFs images.

    Examples: vaecli encode photos/ -o latents/ ; vaecli encode clip.mp4 --model sdxl-vae -o out/

    Exit codes: 0 all inputs done; 1 some inputs failed (the others were done); 2 usage or setup error.
    """
    from ..batch.distributed import current_world, gather_report, rank_device, shard
    from ..batch.engine import MEDIA_SUFFIXES, EncodeOptions, encode_files, plan_jobs
    from ..weights.registry import DEFAULT_MODEL

    size = _size_spec(resize, center_crop)
    world = current_world()  # under torchrun: this rank's share of the inputs, rank 0 reports
    with plain_warnings():
        runner = _load(model, config, weights, rank_device(device, world), dtype, allow_pickle, max_memory)
        jobs = shard(plan_jobs(inputs, MEDIA_SUFFIXES, output, lambda p: ".safetensors"), world)
        opts = EncodeOptions(
            model_name=model or (None if (config or weights) else DEFAULT_MODEL),  # what decode reloads
            weights=weights,
            batch_size=batch_size,
            size=size,
            alpha=alpha.value,
            scale=not no_scale,
            sample=sample,
            seed=seed,
            save_dist=save_dist,
            overwrite=overwrite,
        )
        with Reporter(len(jobs), "encode", json_, quiet or not world.reports) as report:
            results, summary = encode_files(runner, jobs, opts, on_result=report)
    merged = gather_report(results, summary, world)
    if merged is None:  # not rank 0: rank 0 reports for everyone
        return _exit_code(results)
    return emit(*merged, "encoded", json_, quiet)


# ---------------------------------------------------------------------------------------------------
# decode
# ---------------------------------------------------------------------------------------------------


def decode(
    latents: Annotated[list[str], typer.Argument(metavar="LATENT...", help="Latent files (.safetensors, .npy, .pt), folders or globs.")],
    output: Output = None,
    model: Model = None,
    config: Config = None,
    weights: Weights = None,
    device: Device = "auto",
    dtype: DtypeOpt = Dtype.auto,
    batch_size: BatchSize = None,
    max_memory: MaxMemory = None,
    fmt: Annotated[ImageFormat, typer.Option("--format", "-f", help="Image format for decoded images.")] = ImageFormat.png,
    video_format: Annotated[
        Optional[VideoFormat], typer.Option("--video-format", help="Video latents: mp4 or gif. Default: gif for a GIF source, else mp4.")
    ] = None,
    scaled: Annotated[
        Optional[bool],
        typer.Option("--scaled/--unscaled", help="Whether the latents are scaled (scaling_factor * (z - shift)). Default: from the file's metadata; foreign files: scaled."),
    ] = None,
    overwrite: Overwrite = False,
    json_: Json = False,
    quiet: Quiet = False,
    allow_pickle: AllowPickle = False,
) -> int:
    """Decode latent files back into images (PNG by default) and videos.

    A latent written by `vaecli encode` needs no flags: model, scaling and original size come from its metadata, and the image is cropped back to the encoded image's size. Foreign latents (.npy, a .pt holding one tensor, other .safetensors) need --model or --config/--weights, and --scaled/--unscaled. Without -o each image goes beside its latent as <name>.decoded.png; with -o as OUT/<name>.png. Existing images newer than their latent are skipped unless --overwrite.

    Exit codes: 0 all inputs done; 1 some inputs failed (the others were done); 2 usage or setup error.
    """
    from ..batch.distributed import current_world, gather_report, rank_device, shard
    from ..batch.engine import DecodeOptions, ModelSource, decode_files, plan_jobs
    from ..io.latents import LATENT_SUFFIXES

    world = current_world()  # under torchrun: this rank's share of the inputs, rank 0 reports
    device = rank_device(device, world)
    with plain_warnings():
        given = _load(model, config, weights, device, dtype, allow_pickle, max_memory) if (model or config or weights) else None
        from ..api import load_vae
        from ..runtime.executor import Runner
        from ..runtime.memory import MemoryPolicy

        def load(*args, **kwargs):
            vae = load_vae(*args, device=device, dtype=dtype.value, allow_pickle=allow_pickle, **kwargs)
            return Runner(vae, MemoryPolicy(max_memory))

        models = ModelSource(given, load)
        suffix = f".{fmt.value}" if output is not None else f".decoded.{fmt.value}"
        jobs = shard(plan_jobs(latents, LATENT_SUFFIXES, output, lambda p: suffix), world)
        opts = DecodeOptions(
            fmt=fmt.value,
            video_format=None if video_format is None else video_format.value,
            scaled=scaled,
            overwrite=overwrite,
            batch_size=batch_size,
        )
        with Reporter(len(jobs), "decode", json_, quiet or not world.reports) as report:
            results, summary = decode_files(models, jobs, opts, on_result=report)
    merged = gather_report(results, summary, world)
    if merged is None:
        return _exit_code(results)
    return emit(*merged, "decoded", json_, quiet)


# ---------------------------------------------------------------------------------------------------
# roundtrip
# ---------------------------------------------------------------------------------------------------

METRIC_COLUMNS = ("psnr", "ssim", "lpips")


def _lpips(device, enabled: bool, err):
    """The LPIPS model on `device`, or None (not wanted, not installed yet, or weights not cached)."""
    if not enabled:
        return None
    try:
        from ..quality.lpips import MISSING_HINT, load_lpips
    except ImportError:
        return None
    lp = load_lpips(device)
    if lp is None:
        print(MISSING_HINT, file=err)
        return None
    return lambda a, b: lp(a.to(device), b.to(device))


def _table(results: list[dict], summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = [c for c in METRIC_COLUMNS if any(r.get(c) is not None for r in results)]
    table = Table(show_edge=False)
    table.add_column("input", overflow="fold")
    table.add_column("status")
    for c in shown:
        table.add_column(c.upper(), justify="right")

    def fmt(v, c):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.2f}" if c == "psnr" else f"{v:.4f}"

    for r in results:
        table.add_row(r["input"], r["status"], *(fmt(r.get(c), c) for c in shown))
    if results:
        table.add_section()
        table.add_row("mean", "", *(fmt(summary.get(f"mean_{c}"), c) for c in shown))
    console = Console(highlight=False, width=max(100, Console().width))
    console.print(table)
    console.print(_summary_line("measured", summary), markup=False)


def write_report(path: Path, results: list[dict], summary: dict) -> None:
    """--report: .json (same document as --json) or .csv (one row per input), written atomically."""
    from ..io.atomic import atomic_path

    if path.suffix.lower() == ".json":
        text = json.dumps(_finite({"results": results, "summary": summary}), indent=2) + "\n"
    else:
        buf = io.StringIO()
        fields = ["input", "output", "status", "error", *METRIC_COLUMNS, "frames"]
        writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(_finite(results))
        text = buf.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def roundtrip(
    inputs: Inputs,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Save reconstructions (PNG; videos mp4/gif) in this folder.")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Also save input|reconstruction side by side as <name>.compare.png (needs -o).")] = False,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write per-file metrics to FILE.csv or FILE.json.")] = None,
    no_lpips: Annotated[bool, typer.Option("--no-lpips", help="Skip LPIPS even when its weights are cached.")] = False,
    model: Model = None,
    config: Config = None,
    weights: Weights = None,
    device: Device = "auto",
    dtype: DtypeOpt = Dtype.auto,
    batch_size: BatchSize = None,
    max_memory: MaxMemory = None,
    sample: Sample = False,
    seed: Seed = 0,
    resize: Resize = None,
    center_crop: CenterCrop = False,
    alpha: AlphaOpt = Alpha.white,
    json_: Json = False,
    quiet: Quiet = False,
    allow_pickle: AllowPickle = False,
) -> int:
    """Encode and decode each input and measure reconstruction quality: PSNR, SSIM (and LPIPS when cached).

    Prints a table of per-file metrics and their means (or --json / --report FILE.csv|.json). Metrics compare the image fed to the model (after --resize/--center-crop) with its reconstruction, both in [0, 1]; videos report the mean over frames.

    Exit codes: 0 all inputs done; 1 some inputs failed (the others were done); 2 usage or setup error.
    """
    from ..batch.distributed import current_world, gather_report, rank_device, shard
    from ..batch.engine import (
        MEDIA_SUFFIXES,
        EncodeOptions,
        RoundtripOptions,
        plan_jobs,
        roundtrip_files,
        with_metric_means,
    )

    if compare and output is None:
        raise typer.BadParameter("--compare needs -o/--output to say where the images go", param_hint="--compare")
    if report is not None and report.suffix.lower() not in (".csv", ".json"):
        raise typer.BadParameter(f"{report}: use a .csv or .json file", param_hint="--report")
    size = _size_spec(resize, center_crop)
    world = current_world()  # under torchrun: this rank's share of the inputs, rank 0 reports
    with plain_warnings():
        runner = _load(model, config, weights, rank_device(device, world), dtype, allow_pickle, max_memory)
        jobs = shard(plan_jobs(inputs, MEDIA_SUFFIXES, output, lambda p: ".png" if output is not None else None), world)
        eo = EncodeOptions(batch_size=batch_size, size=size, alpha=alpha.value, sample=sample, seed=seed)
        opts = RoundtripOptions(eo, save=output is not None, compare=compare, lpips=_lpips(runner.device, not no_lpips, sys.stderr))
        with Reporter(len(jobs), "roundtrip", json_, quiet or not world.reports) as reporter:
            results, summary = roundtrip_files(runner, jobs, opts, on_result=reporter)
    merged = gather_report(results, summary, world)
    if merged is None:
        return _exit_code(results)
    results, summary = merged[0], with_metric_means(merged[1], merged[0])
    if report is not None:
        write_report(report, results, summary)
    if json_:
        print_json({"results": results, "summary": summary})
    elif not quiet:
        _table(results, summary)
    return _exit_code(results)
