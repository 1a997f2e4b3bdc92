"""What a run reports: one result per input, the summary counts, metric means and the exit code.

A result is a plain dict, so it goes to JSON, CSV and torchrun's gather unchanged:
`{"input", "output", "status": "ok" | "skipped" | "failed", "error", ...extras}` (extras: a latent's
`shape`, an image's `width`/`height`, a roundtrip's `psnr`/`ssim`/`lpips`, a video's `frames`/`fps`).
"""

from __future__ import annotations

import math

from ..errors import EXIT_OK, EXIT_SOME_FAILED

STATUSES = ("ok", "skipped", "failed")
METRICS = ("psnr", "ssim", "lpips")
EXTRAS = ("shape", "width", "height", "frames", "fps", *METRICS)  # what a result may add; a skipped one, from its output


def make_result(input_path, output, status: str, error: str | None = None, **extra) -> dict:
    return {"input": str(input_path), "output": None if output is None else str(output), "status": status, "error": error, **extra}


def summarize(results: list[dict], seconds: float) -> dict:
    """The report's summary: how many inputs, how many ok/skipped/failed, and the seconds taken."""
    counts = {s: sum(r["status"] == s for r in results) for s in STATUSES}
    return {"total": len(results), **counts, "seconds": round(seconds, 3)}


def with_metric_means(summary: dict, results: list[dict]) -> dict:
    """`summary` plus mean_psnr/mean_ssim/mean_lpips over the inputs that have a value.

    An image under SSIM's 11-pixel window has no SSIM (NaN, null in JSON) and is left out of the mean
    instead of making it null; `<metric>_count` says how many inputs each mean covers. A perfect
    reconstruction's PSNR is inf, and so is then the mean: that is the true value.
    """
    for k in METRICS:
        vals = [r[k] for r in results if r["status"] != "failed" and isinstance(r.get(k), (int, float)) and not math.isnan(r[k])]
        if vals:
            summary[f"mean_{k}"] = sum(vals) / len(vals)
            summary[f"{k}_count"] = len(vals)
    return summary


def exit_code(results: list[dict]) -> int:
    """0 when every input is done or up to date, 1 when some failed (the others were done)."""
    return EXIT_SOME_FAILED if any(r["status"] == "failed" for r in results) else EXIT_OK
