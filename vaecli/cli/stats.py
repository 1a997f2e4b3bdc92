"""`vaecli stats`: a model's latent statistics over a data set, the scaling a trainer should use, and a normaliser file."""

from __future__ import annotations

import sys
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
    MaxMemory,
    Model,
    Overwrite,
    Quiet,
    Resize,
    Sample,
    Seed,
    Weights,
    json_option,
)

MAX_CHANNEL_ROWS = 32  # more channels (FLUX.2's 128 patchified ones) print as ranges; --json has them all


def _print_text(name: str, stats: dict, model_factors: tuple, normalizer: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=max(100, Console().width))
    c = stats["channels"]
    console.print(f"{name}: {stats['count']} latent cells of {c} channels", markup=False)
    if c <= MAX_CHANNEL_ROWS:
        table = Table(show_edge=False)
        for col in ("channel", "mean", "std", "min", "max"):
            table.add_column(col, justify="right")
        for i in range(c):
            table.add_row(str(i), *(f"{stats[k][i]:.5g}" for k in ("mean", "std", "min", "max")))
        console.print(table)
    else:
        for k in ("mean", "std"):
            console.print(f"per-channel {k}: {min(stats[k]):.5g} .. {max(stats[k]):.5g} (--json lists each channel)", markup=False)
    sd, flux = stats["suggested"]["sd"], stats["suggested"]["sd3_flux"]
    scale, shift = model_factors
    console.print(f"global mean {stats['global_mean']:.6g}, std {stats['global_std']:.6g}", markup=False)
    console.print(f"scaling_factor {sd['scaling_factor']:.6g} (SD convention: scaling_factor * z)", markup=False)
    console.print(f"scaling_factor {flux['scaling_factor']:.6g}, shift_factor {flux['shift_factor']:.6g} "
                  "(SD3/FLUX convention: scaling_factor * (z - shift_factor))", markup=False)
    console.print(f"the model's own: scaling_factor {scale}, shift_factor {shift}", markup=False)
    what = "ActNorm + whitening 1x1 conv" if normalizer["whiten"] else "ActNorm"
    where = f", written to {normalizer['file']}" if normalizer["file"] else ""
    console.print(f"normaliser: {what}, log|det| {normalizer['logdet_per_cell']:.6g} per latent cell{where}", markup=False)


def stats(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT...", help="Image/video files, folders (searched recursively) or globs: what encode would read.")],
    output: Annotated[
        Optional[Path],
        typer.Option("-o", "--output", metavar="FILE", help="Write the fitted normaliser to FILE.safetensors (for encode --normalize)."),
    ] = None,
    whiten: Annotated[bool, typer.Option("--whiten", help="The normaliser also whitens the channels (a Glow LU 1x1 convolution).")] = False,
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
    json_: json_option(
        "{results: [{input, output, status, error, shape, frames}], summary: {total, ok, skipped, failed, seconds}, "
        "statistics: {count, channels, mean, std, min, max, global_mean, global_std, suggested: {sd, sd3_flux: "
        "{scaling_factor, shift_factor}}}, normalizer: {file, whiten, logdet_per_cell}, data: {inputs, cells, sha256}}"
    ) = False,
    quiet: Quiet = False,
    allow_pickle: AllowPickle = False,
) -> int:
    """Per-channel and global statistics of a model's latents over a data set, and the factors a trainer should use.

    The latents are those `vaecli encode` stores before scaling (raw z; FLUX.2's normalised 2x2 patches), the posterior's mode (--sample: the draw encode --sample stores), accumulated in float64 without holding them. Prints the scaling_factor (1/std, SD convention) and shift_factor (mean, SD3/FLUX convention), and fits a normaliser (ActNorm from the data; --whiten adds a whitening LU 1x1 convolution, its log-determinant reported). -o FILE writes it for `vaecli encode --normalize FILE`; an existing FILE is replaced only when it is a vaecli normaliser, or with --overwrite.

    Example: vaecli stats photos/ --model sdxl-vae -o sdxl-photos.safetensors
    Exit codes: 0 all inputs measured; 1 some inputs failed (the others were measured; a file is still written); 2 usage or setup error.
    """
    from ..batch.distributed import current_world, rank_device
    from ..batch.encode import (
        MEDIA_SUFFIXES,
        EncodeOptions,
        name_media,
        shaping_options,
    )
    from ..batch.inputs import expand_inputs
    from ..batch.latent_space import layout_of
    from ..batch.models import ModelFlags, digest_cache, dtype_name
    from ..batch.plan import plan_jobs
    from ..batch.report import exit_code
    from ..batch.stats import NormalizerOutput, gather_moments
    from ..errors import EXIT_SOME_FAILED, VaecliError
    from ..stats.normalizer import LatentNormalizer
    from .model_setup import load_runner, size_spec
    from .output import (
        Reporter,
        plain_warnings,
        print_json,
        printable,
        summary_line,
        warn,
    )

    size = size_spec(resize, center_crop)
    target = None if output is None else NormalizerOutput(output, overwrite)  # judged before any work
    flags = ModelFlags(model, config, weights)
    with plain_warnings():
        found = expand_inputs(inputs, MEDIA_SUFFIXES, warn)
        if not found:
            raise VaecliError(f"nothing to measure: no {', '.join(MEDIA_SUFFIXES)} file in {printable(' '.join(inputs))}")
        jobs = plan_jobs(found, lambda job: name_media(job, None, None))
        runner, budget = load_runner(flags, rank_device(device, current_world()), dtype, allow_pickle, max_memory)
        vae = runner.vae
        opts = EncodeOptions(size=size, alpha=alpha.value, sample=sample, seed=seed, batch_size=batch_size, data_budget=budget)
        with Reporter(len(jobs), "stats", json_, quiet) as reporter:
            moments, data, results, summary = gather_moments(runner, jobs, opts, reporter)
    if moments.count < 2:
        print("Error: no latents to measure: every input failed", file=sys.stderr)
        return EXIT_SOME_FAILED
    name = flags.recorded_name or vae.config.name or "model"
    try:
        norm = LatentNormalizer.fit(moments, whiten=whiten, metadata={"model": name})
    except ValueError as e:
        raise VaecliError(str(e)) from None
    if target is not None:
        options = {**shaping_options(opts), "dtype": dtype_name(runner.dtype), "layout": layout_of(vae), "whiten": whiten}
        target.write(norm, {"model": flags.identity(digest_cache()), "options": options, "data": data})
    stats_doc = moments.summary()
    normalizer = {"file": None if output is None else str(output), "whiten": whiten, "logdet_per_cell": norm.logdet_per_cell()}
    if json_:
        print_json({"results": results, "summary": summary, "statistics": stats_doc, "normalizer": normalizer, "data": data})
    elif not quiet:
        _print_text(name, stats_doc, (vae.config.scaling_factor, vae.config.shift_factor), normalizer)
        print(summary_line("measured", summary))
    return exit_code(results)

