"""`vaecli compare`: which VAE suits these images: each model roundtrips the same inputs, one table (or JSON, or HTML).

A thin command over vaecli.batch.compare: it parses options, loads what every model shares
(LPIPS, the FID Inception, the report's gallery) once, and prints. Torch is imported only inside.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE
from .batch_command import check_output_folder, check_report
from .model_setup import (
    encode_options,
    inception_network,
    load_runner,
    lpips_network,
    refuse_under_torchrun,
    size_spec,
)
from .options import (
    AllowPickle,
    Alpha,
    AlphaOpt,
    BatchSize,
    CenterCrop,
    Device,
    Dtype,
    DtypeOpt,
    Fid,
    MaxMemory,
    NoLpips,
    Overwrite,
    Quiet,
    Resize,
)
from .output import (
    Reporter,
    json_text,
    plain_warnings,
    print_json,
    printable,
    warn,
    write_report,
)

MODELS_HELP = (
    "A model to compare; repeat it (--model A --model B ...). Anything `encode --model` takes (registry name, ORG/REPO "
    "or ORG/REPO/SUBFOLDER, a diffusers folder), or a weights file ending in .safetensors (.ckpt/.pt/.pth/.bin with "
    "--allow-pickle), as `--weights` takes it."
)


def html_report(path: Path, title: str, rows: list[dict], results: dict[str, list[dict]], gallery) -> str:
    """The HTML report (vaecli.quality.report_html) of one or several models' rows, results and gallery."""
    from ..batch.compare import COLUMNS, best_per_column
    from ..quality.report_html import render_report

    notes = [f"{r['model']}: {r['rfid_note']}" for r in rows if r.get("rfid_note")]
    failures = [f"{label}: {r['error']}" for label, rs in results.items() for r in rs if r["status"] == "failed"]
    return render_report(title, rows, COLUMNS, best_per_column(rows), gallery, path, notes, failures)


def print_comparison(rows: list[dict], best: dict[str, str]) -> None:
    """The table: one row per model, the best value of each ranked column starred."""
    from rich.console import Console
    from rich.table import Table

    from ..batch.compare import COLUMNS

    table = Table(show_edge=False)
    for c in COLUMNS:
        table.add_column(c.header, justify="left" if c.key == "model" else "right")
    for row in rows:
        table.add_row(*(printable(c.format(row.get(c.key))) + (" *" if best.get(c.key) == row["model"] else "") for c in COLUMNS))
    console = Console(highlight=False, width=max(100, Console().width))
    console.print(table)
    for row in rows:
        if row.get("rfid_note"):
            console.print(f"{row['model']}: {row['rfid_note']}", markup=False)
    console.print("* best in its column; images/s: encode + decode on this device", markup=False)


def compare(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT...", help="Image/video files, folders (searched recursively) or globs.")],
    models: Annotated[list[str], typer.Option("--model", "-m", help=MODELS_HELP)],
    output: Annotated[
        Optional[Path], typer.Option("-o", "--output", help="Save each model's reconstructions under OUT/<model label>/ (linked from an HTML report).")
    ] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the comparison to FILE.html (self-contained, visual) or FILE.json.")] = None,
    fid: Fid = False,
    no_lpips: NoLpips = False,
    device: Device = "auto",
    dtype: DtypeOpt = Dtype.auto,
    batch_size: BatchSize = None,
    max_memory: MaxMemory = None,
    resize: Resize = None,
    center_crop: CenterCrop = False,
    alpha: AlphaOpt = Alpha.white,
    overwrite: Overwrite = False,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON document: {models: [...], best: {...}, results: {model: [...]}}.")] = False,
    quiet: Quiet = False,
    allow_pickle: AllowPickle = False,
) -> int:
    """Compare VAEs on your images: every model roundtrips the same inputs, one row each.

    Columns: latent channels and downsampling factor, mean PSNR, SSIM, LPIPS (when its weights are cached), rFID (--fid), and images/s (encode + decode on this device); the best of each column is marked. Models are loaded one at a time. Example: vaecli compare photos/ --model vaecli-default --model sdxl-vae --model my-finetune.safetensors --report cmp.html

    Exit codes: 0 every model measured every input; 1 some inputs failed; 2 usage or setup error (a model that cannot be loaded: the others are still compared).
    """
    from ..batch.compare import compare_models, parse_models
    from ..batch.distributed import current_world
    from ..batch.encode import MEDIA_SUFFIXES
    from ..batch.inputs import expand_inputs
    from ..batch.roundtrip import RoundtripOptions
    from ..errors import VaecliError
    from ..quality.fid import ReconstructionFid
    from ..quality.gallery import Gallery
    from ..runtime.device import pick_device

    if report is not None and report.suffix.lower() not in (".html", ".json"):
        raise typer.BadParameter(f"{report}: use a .html or .json file", param_hint="--report")
    check_output_folder(output)
    check_report(report, html=True, overwrite=overwrite)
    refuse_under_torchrun(fid, report)
    if current_world().is_distributed:
        raise typer.BadParameter("compare runs in one process; not under torchrun", param_hint="compare")
    specs = parse_models(models)
    size = size_spec(resize, center_crop)
    gallery = Gallery() if report is not None and report.suffix.lower() == ".html" else None
    with plain_warnings():
        found = expand_inputs(inputs, MEDIA_SUFFIXES, warn, exclude=output)
        if not found:
            raise VaecliError(f"nothing to compare: no {', '.join(MEDIA_SUFFIXES)} file in {printable(' '.join(inputs))}")
        dev = pick_device(device)
        network = inception_network(dev, fid)
        lpips = lpips_network(dev, not no_lpips, tell=not (quiet or json_))

        def load(spec):
            return load_runner(spec.flags, dev, dtype, allow_pickle, max_memory)

        def options(spec, runner, budget):
            eo = encode_options(spec.flags, runner, budget, batch_size=batch_size, size=size, alpha=alpha.value, overwrite=overwrite)
            return RoundtripOptions(eo, lpips=lpips, rfid=None if network is None else ReconstructionFid(network),
                                    observe=None if gallery is None else gallery.observer(spec.label))

        with Reporter(len(found) * len(specs), "compare", json_, quiet) as reporter:
            done = compare_models(specs, found, output, load, options, reporter)
    for line in done.load_errors:
        print(f"Error: {printable(line)}", file=sys.stderr)
    document = {"models": done.rows, "best": done.best, "results": done.results}
    if json_:
        print_json(document)
    elif not quiet:
        print_comparison(done.rows, done.best)
    if report is not None:
        try:
            html = gallery is not None
            write_report(report, [], {}, html_report(report, "vaecli compare", done.rows, done.results, gallery) if html else json_text(document))
        except OSError as e:
            print(f"Error: --report {printable(str(report))}: cannot write ({e.strerror or e})", file=sys.stderr)
            return EXIT_USAGE
    if done.load_errors:
        return EXIT_USAGE
    return EXIT_SOME_FAILED if any(r["status"] == "failed" for rs in done.results.values() for r in rs) else EXIT_OK

