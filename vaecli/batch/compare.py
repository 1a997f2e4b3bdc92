"""compare: every model roundtrips the same inputs, one model loaded at a time; one summary row per model.

Each model runs the roundtrip engine (vaecli.batch.roundtrip) over its own plan of the same found
inputs, so outputs (-o OUT/<model label>/...), failures and metrics behave exactly as `roundtrip`'s.
Only one model (and its runner) is alive at a time; what is shared across models is loaded once by
the caller: LPIPS, the FID Inception, the report's gallery.
"""

from __future__ import annotations

import gc
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import VaecliError
from ..quality.report_html import Column
from ..weights.formats import PICKLE_SUFFIXES
from .inputs import Found
from .models import ModelFlags
from .plan import plan_jobs
from .roundtrip import RoundtripOptions, name_roundtrip, roundtrip_files

WEIGHTS_FILE_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)

COLUMNS = [
    Column("model", "model"),
    Column("channels", "channels"),
    Column("factor", "factor"),
    Column("mean_psnr", "PSNR dB", 2, True),
    Column("mean_ssim", "SSIM", 4, True),
    Column("mean_lpips", "LPIPS", 4, False),
    Column("rfid", "rFID", 3, False),
    Column("images_per_second", "images/s", 2, True),
]


@dataclass(frozen=True)
class ModelSpec:
    """One --model value: its label (a row, a folder under -o) and the flags that load it."""

    text: str
    label: str
    flags: ModelFlags


def parse_models(values: list[str]) -> list[ModelSpec]:
    """--model values -> specs. A value ending in a weights suffix (.safetensors, .ckpt, .pt, .pth,
    .bin) is a weights file, as `--weights` takes it; anything else is what `--model` takes (a
    registry name, ORG/REPO[/SUBFOLDER], a diffusers folder). Labels are unique: a file's stem, or
    the name, with a -2, -3... suffix for repeats."""
    specs, taken = [], set()
    for text in values:
        path = Path(text)
        flags = ModelFlags(weights=path) if path.suffix.lower() in WEIGHTS_FILE_SUFFIXES else ModelFlags(model=text)
        base = path.stem if flags.weights else text.rstrip("/")
        base = re.sub(r"[^A-Za-z0-9._+-]+", "_", base).strip("._") or "model"
        label, k = base, 1
        while label in taken:
            k += 1
            label = f"{base}-{k}"
        taken.add(label)
        specs.append(ModelSpec(text, label, flags))
    return specs


def images_measured(results: list[dict]) -> int:
    """Images, and frames of videos, that went through the model in this run."""
    return sum(int(r.get("frames") or 1) for r in results if r["status"] == "ok")


def summary_row(spec: ModelSpec, vae, results: list[dict], summary: dict) -> dict:
    """One model's row: latent geometry, metric means, rFID, and its encode+decode speed on this device."""
    n, seconds = images_measured(results), summary.get("model_seconds") or 0.0
    row = {"model": spec.label, "spec": spec.text, "channels": vae.latent_channels, "factor": vae.downsample_factor}
    row |= {k: summary.get(k) for k in ("mean_psnr", "mean_ssim", "mean_lpips", "rfid", "rfid_images", "rfid_note")}
    row |= {"images_per_second": n / seconds if seconds > 0 else None, "model_seconds": seconds,
            **{k: summary[k] for k in ("total", "ok", "failed")}}
    return row


def best_per_column(rows: list[dict], columns: list[Column] = COLUMNS) -> dict[str, str]:
    """Ranked column key -> the label of the best row (the first of equals); columns nobody has are left out,
    and a single row is best at nothing (there is nothing to compare it with)."""
    best = {}
    if len(rows) < 2:
        return best
    for c in columns:
        if c.higher_is_better is None:
            continue
        have = [(r[c.key], r["model"]) for r in rows if isinstance(r.get(c.key), (int, float)) and not math.isnan(r[c.key])]
        if have:
            pick = max if c.higher_is_better else min
            best[c.key] = pick(have, key=lambda vm: vm[0])[1]
    return best


@dataclass
class Comparison:
    rows: list[dict]  # one per model that loaded
    results: dict[str, list[dict]]  # label -> per-input results
    load_errors: list[str]  # one line per model that could not be loaded

    @property
    def best(self) -> dict[str, str]:
        return best_per_column(self.rows)


def free_model(device: torch.device) -> None:
    """Give a model's memory back before the next one loads."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def compare_models(specs: list[ModelSpec], found: list[Found], out_dir: Path | None, load: Callable[[ModelSpec], tuple],
                   options: Callable[[ModelSpec, object, int], RoundtripOptions], on_result=None) -> Comparison:
    """Roundtrip `found` with each model in turn. `load(spec)` -> (Runner, data budget);
    `options(spec, runner, budget)` -> its RoundtripOptions (with a fresh rFID and the gallery's observer)."""
    comparison = Comparison([], {}, [])
    for spec in specs:
        target = None if out_dir is None else out_dir / spec.label
        jobs = plan_jobs(found, lambda job, target=target: name_roundtrip(job, target, False))
        try:
            runner, budget = load(spec)
        except VaecliError as e:
            comparison.load_errors.append(f"--model {spec.text}: {e}")
            continue
        device = runner.device
        try:
            results, summary = roundtrip_files(runner, jobs, options(spec, runner, budget), on_result)
            comparison.rows.append(summary_row(spec, runner.vae, results, summary))
            comparison.results[spec.label] = results
        finally:
            del runner
            free_model(device)
    return comparison
