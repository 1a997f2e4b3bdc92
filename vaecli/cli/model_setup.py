"""What every model-running command does before its run: load the model under its memory share, parse --resize,
build the encode options that go into each output's recipe, and load the networks the metrics need (LPIPS, FID's
Inception). encode, decode, roundtrip, compare and stats share these, so each is said and checked once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .options import Dtype
from .output import warn


def say_if_slow(dtype: Dtype, device) -> None:
    """fp16 on a CPU has few fast kernels (bf16 and fp32 have them): say so once, before the run."""
    if dtype == Dtype.fp16 and getattr(device, "type", str(device)) == "cpu":
        warn("--dtype fp16 on a CPU is much slower than bf16 or fp32 (few CPU kernels for float16); use --dtype bf16 or fp32")


def load_runner(flags, device, dtype, allow_pickle, max_memory):
    """The model as a Runner under its share of --max-memory, and the data budget that goes with it."""
    from ..api import load_vae
    from ..batch.models import make_runner

    vae = load_vae(flags.model, config=flags.config, weights=flags.weights, device=device, dtype=dtype.value, allow_pickle=allow_pickle)
    say_if_slow(dtype, next(vae.parameters()).device)
    return make_runner(vae, max_memory)


def size_spec(resize: str | None, center_crop: bool):
    from ..io.images import SizeSpec

    try:
        return SizeSpec.parse(resize, center_crop)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--resize") from None


def encode_options(flags, runner, data_budget, **kw):
    from ..batch.encode import EncodeOptions
    from ..batch.models import digest_cache

    return EncodeOptions(model_name=flags.recorded_name, weights=flags.weights, model_identity=flags.identity(digest_cache()),
                         data_budget=data_budget, **kw)


def lpips_network(device, enabled: bool, tell: bool):
    """The LPIPS model on `device`, or None (not wanted, not installed yet, or weights not cached).

    Missing weights are said once per run, as one line, and only when `tell` (never with --quiet or --json).
    """
    if not enabled:
        return None
    try:
        from ..quality.lpips import MISSING_HINT, load_lpips
    except ImportError:
        return None
    lp = load_lpips(device)
    if lp is None:
        if tell:
            print(MISSING_HINT, file=sys.stderr)
        return None
    return lambda a, b: lp(a.to(device), b.to(device))


def inception_network(device, enabled: bool):
    """The FID Inception on `device` for --fid (None when not asked for); never downloaded here:
    missing weights are a setup error naming the one command that fetches them."""
    if not enabled:
        return None
    from ..errors import WeightsNotCachedError
    from ..quality.inception import WEIGHTS_NAME, load_inception

    network = load_inception(device)
    if network is None:
        raise WeightsNotCachedError(f"--fid: the FID Inception weights are not cached; run: vaecli fetch-weights {WEIGHTS_NAME}")
    return network


def refuse_under_torchrun(fid: bool, report: Path | None) -> None:
    """rFID and the HTML report need every image in one process: not split over torchrun's ranks."""
    from ..batch.distributed import current_world

    html = report is not None and report.suffix.lower() == ".html"
    if (fid or html) and current_world().is_distributed:
        raise typer.BadParameter("--fid and an HTML --report are not supported under torchrun; run one process", param_hint="--fid/--report")


def model_label(flags) -> str:
    """How a report names the model given by --model/--weights."""
    return flags.model or (Path(flags.weights).stem if flags.weights else None) or flags.recorded_name or "model"
