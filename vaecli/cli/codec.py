"""`vaecli encode`, `decode` and `roundtrip`: parse options, then run vaecli.batch through the shared skeleton.

Each command only says how to name its outputs and what to load; batch_command.run_batch does the
rest the same way for all three. Torch is imported only inside the commands, so --help stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .batch_command import BatchCommand, run_batch
from .model_setup import (
    encode_options,
    inception_network,
    load_runner,
    lpips_network,
    model_label,
    refuse_under_torchrun,
    say_if_slow,
    size_spec,
)
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
    Fid,
    ImageFormat,
    Json,
    MaxMemory,
    Model,
    NoLpips,
    Output,
    Overwrite,
    Quiet,
    Resize,
    Sample,
    Seed,
    VideoFormat,
    Weights,
)
from .output import warn

Inputs = Annotated[list[str], typer.Argument(metavar="INPUT...", help="Image/video files, folders (searched recursively) or globs.")]
NoScale = Annotated[bool, typer.Option("--no-scale", help="Store raw latents instead of scaling_factor * (z - shift_factor).")]
SaveDist = Annotated[bool, typer.Option("--save-dist", help="Also store the posterior's `mean` and `logvar` tensors.")]
Normalize = Annotated[
    Optional[Path],
    typer.Option("--normalize", metavar="FILE", help="Store normaliser(latents) from a `vaecli stats -o FILE` file instead of scaling; decode inverts it from the latent alone."),
]
EXIT_CODES = "Exit codes: 0 all inputs done or up to date; 1 some inputs failed (the others were done); 2 usage or setup error."


def _normalizer(path: Path | None, vae) -> dict:
    """EncodeOptions' normaliser fields for --normalize FILE (checked against the model: exit 2 when it does not fit)."""
    if path is None:
        return {}
    from ..batch.latent_space import check_normalizer, load_normalizer

    norm, text, sha = load_normalizer(path)
    check_normalizer(norm, vae, str(path))
    return {"normalizer": norm, "normalizer_text": text, "normalizer_sha256": sha}


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
    normalize: Normalize = None,
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

    a/b.png -> OUT/b.safetensors ([C,h,w]); a video -> [T,C,h,w] with its fps. Folder inputs keep their relative paths under OUT; without -o each latent goes beside its input. Two inputs that would write one latent (b.png and b.jpg) both fail, naming each other. Sizes that are not a multiple of the model's downsampling factor are padded (reflect) and the original size recorded, so decode returns the input's exact size. An existing latent made from the same file by the same model and options is skipped; made otherwise, it is redone; any other existing file is left alone (that input fails) unless --overwrite. Every file is written atomically, so a rerun after Ctrl-C or a crash completes exactly what is missing. Animated GIFs are videos; single-frame GIFs images.

    Examples: vaecli encode photos/ -o latents/ ; vaecli encode clip.mp4 --model sdxl-vae -o out/
    """
    from ..batch.distributed import current_world, rank_device
    from ..batch.encode import MEDIA_SUFFIXES, encode_files, name_media
    from ..batch.models import ModelFlags

    if normalize is not None and no_scale:
        raise typer.BadParameter("--normalize stores normalised latents, --no-scale raw ones: give one of them", param_hint="--no-scale")
    size = size_spec(resize, center_crop)
    flags = ModelFlags(model, config, weights)

    def start():
        runner, budget = load_runner(flags, rank_device(device, current_world()), dtype, allow_pickle, max_memory)
        opts = encode_options(flags, runner, budget, batch_size=batch_size, size=size, alpha=alpha.value, scale=not no_scale, sample=sample,
                               seed=seed, save_dist=save_dist, overwrite=overwrite, **_normalizer(normalize, runner.vae))
        return lambda jobs, on_result: encode_files(runner, jobs, opts, on_result)

    cmd = BatchCommand("encode", "encoded", MEDIA_SUFFIXES, lambda job: name_media(job, output, ".safetensors"), start)
    return run_batch(cmd, inputs, output, json_, quiet)


encode.__doc__ += "\n    " + EXIT_CODES


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
    lossless_video: Annotated[
        bool,
        typer.Option("--lossless-video", help="mp4: exact pixels at the exact size (H.264 High 4:4:4 RGB, which many browsers and players "
                     "refuse) instead of yuv420p, which plays everywhere (an odd width or height gets its last column or row repeated)."),
    ] = False,
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

    A latent written by `vaecli encode` needs no flags: model, scaling and original size come from its metadata, and the image is cropped back to the encoded image's size. Foreign latents (.npy, a .pt holding one tensor, other .safetensors) need --model or --config/--weights, and --scaled/--unscaled. Without -o each image goes beside its latent as <name>.decoded.png; with -o as OUT/<name>.png. An existing image decoded from the same latent the same way is skipped; decoded otherwise (another model, --unscaled...), it is redone; any other existing file (your own photo) is left alone (that input fails) unless --overwrite.
    """
    from ..batch.decode import DecodeOptions, decode_files, name_latent
    from ..batch.distributed import current_world, rank_device
    from ..batch.models import (
        ModelFlags,
        ModelSource,
        digest_cache,
        dtype_name,
        make_runner,
        memory_split,
    )
    from ..io.latents import LATENT_SUFFIXES

    opts = DecodeOptions(fmt=fmt.value, video_format=None if video_format is None else video_format.value, scaled=scaled,
                         overwrite=overwrite, batch_size=batch_size, lossless_video=lossless_video)
    flags = ModelFlags(model, config, weights)

    def start():
        from ..api import load_vae
        from ..runtime.device import pick_device, resolve_dtype

        dev = pick_device(rank_device(device, current_world()))
        say_if_slow(dtype, dev)
        digests = digest_cache()

        def load(*args, **kwargs):
            vae = load_vae(*args, device=dev, dtype=dtype.value, allow_pickle=allow_pickle, **kwargs)
            return make_runner(vae, max_memory)[0]

        given = load(model, config=config, weights=weights) if (model or config or weights) else None
        opts.dtype = dtype_name(given.dtype if given is not None else resolve_dtype(dtype.value, dev))
        opts.data_budget = memory_split(max_memory, dev)[1]
        models = ModelSource(given, None if given is None else flags.identity(digests), load, digests)
        return lambda jobs, on_result: decode_files(models, jobs, opts, on_result)

    cmd = BatchCommand("decode", "decoded", LATENT_SUFFIXES, lambda job: name_latent(job, output, opts), start)
    return run_batch(cmd, latents, output, json_, quiet)


decode.__doc__ += "\n    " + EXIT_CODES


def roundtrip(
    inputs: Inputs,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Save reconstructions (PNG; videos mp4/gif) in this folder.")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Also save input|reconstruction side by side as <name>.compare.png (needs -o).")] = False,
    report: Annotated[
        Optional[Path],
        typer.Option("--report", help="Write per-file metrics to FILE.csv or FILE.json, or a self-contained visual report to FILE.html."),
    ] = None,
    no_lpips: NoLpips = False,
    fid: Fid = False,
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
    overwrite: Overwrite = False,
    json_: Json = False,
    quiet: Quiet = False,
    allow_pickle: AllowPickle = False,
) -> int:
    """Encode and decode each input and measure reconstruction quality: PSNR, SSIM (and LPIPS when cached).

    Prints a table of per-file metrics and their means (or --json / --report FILE.csv|.json). Metrics compare the image fed to the model (after --resize/--center-crop) with its reconstruction, both in [0, 1]; videos report the mean over frames. With -o, a reconstruction that is up to date (same source, model and options) is not redone: its recorded metrics are reported as skipped; an existing file that vaecli did not make from this input is left alone (that input fails) unless --overwrite.
    """
    from ..batch.distributed import current_world, rank_device
    from ..batch.encode import MEDIA_SUFFIXES
    from ..batch.models import ModelFlags
    from ..batch.roundtrip import RoundtripOptions, name_roundtrip, roundtrip_files

    if compare and output is None:
        raise typer.BadParameter("--compare needs -o/--output to say where the images go", param_hint="--compare")
    refuse_under_torchrun(fid, report)
    size = size_spec(resize, center_crop)
    flags = ModelFlags(model, config, weights)
    gallery, loaded = None, {}
    if report is not None and report.suffix.lower() == ".html":
        from ..quality.gallery import Gallery

        gallery = Gallery()

    def start():
        from ..quality.fid import ReconstructionFid
        from ..runtime.device import pick_device

        dev = pick_device(rank_device(device, current_world()))
        network = inception_network(dev, fid)  # before the model: missing weights stop the run before any work
        runner, budget = load_runner(flags, dev, dtype, allow_pickle, max_memory)
        eo = encode_options(flags, runner, budget, batch_size=batch_size, size=size, alpha=alpha.value, sample=sample, seed=seed,
                             overwrite=overwrite)
        opts = RoundtripOptions(eo, compare=compare, lpips=lpips_network(runner.device, not no_lpips, tell=not (quiet or json_) and current_world().reports),
                                rfid=None if network is None else ReconstructionFid(network),
                                observe=None if gallery is None else gallery.observer(model_label(flags)))
        loaded["vae"] = runner.vae
        return lambda jobs, on_result: roundtrip_files(runner, jobs, opts, on_result)

    def name(job):
        name_roundtrip(job, output, compare)
        if compare and job.kind == "video":
            warn(f"{job.input}: --compare writes side-by-side images of images only; none is written for a video")

    def html(path: Path, results: list[dict], summary: dict) -> str:
        from ..batch.compare import ModelSpec, summary_row
        from .compare import html_report

        label = model_label(flags)
        return html_report(path, "vaecli roundtrip", [summary_row(ModelSpec(label, label, flags), loaded["vae"], results, summary)],
                           {label: results}, gallery)

    cmd = BatchCommand("roundtrip", "measured", MEDIA_SUFFIXES, name, start, metrics=True, html=html)
    return run_batch(cmd, inputs, output, json_, quiet, report, overwrite)


roundtrip.__doc__ += "\n    " + EXIT_CODES
