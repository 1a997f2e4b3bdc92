"""Time `vaecli roundtrip` of one 512x512 image with the embedded default model.

    python scripts/measure_default.py [--image samples/astronaut.jpg] [--runs 7] [--weights FILE]

Two figures, both reported, neither a test (timings depend on the machine and its load):
- in-process: the `roundtrip` command invoked through Typer's runner inside one Python process,
  so each run is model load + image read + encode + decode + PSNR/SSIM + PNG write, without the
  interpreter's start-up and first imports (the first, import-paying run is reported on its own);
- whole command: `vaecli roundtrip IMAGE -o DIR --json` as a subprocess, Python start-up included.
Medians of `--runs`. LPIPS is off as on a fresh machine: VAECLI_CACHE points at an empty folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", type=Path, default=REPO / "samples" / "astronaut.jpg")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--weights", type=Path, default=None, help="a weights file instead of the embedded model")
    args = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="vaecli-measure-"))
    os.environ["VAECLI_CACHE"] = str(tmp / "cache")  # empty cache: no LPIPS weights, as on a fresh machine
    cmd = ["roundtrip", str(args.image), "-o", str(tmp / "out"), "--json"]
    if args.weights is not None:
        cmd += ["--weights", str(args.weights)]
    try:
        from typer.testing import CliRunner

        from vaecli.cli.app import app

        runner = CliRunner()
        times, last = [], None
        for _ in range(args.runs + 1):  # the first run pays the imports; reported apart
            t0 = time.perf_counter()
            result = runner.invoke(app, cmd)
            times.append(time.perf_counter() - t0)
            if result.exit_code != 0:
                print(f"roundtrip failed (exit {result.exit_code}): {result.output}", file=sys.stderr)
                return 1
            last = result.stdout
        summary = json.loads(last)["summary"]

        exe = shutil.which("vaecli") or sys.executable
        full = [exe, *cmd] if exe.endswith("vaecli") else [exe, "-m", "vaecli", *cmd]
        walls = []
        for _ in range(max(3, args.runs // 2)):
            t0 = time.perf_counter()
            subprocess.run(full, check=True, capture_output=True)
            walls.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    report = {
        "image": str(args.image),
        "weights": str(args.weights) if args.weights else "embedded vaecli-default",
        "in_process_first_s": round(times[0], 3),
        "in_process_median_s": round(statistics.median(times[1:]), 3),
        "in_process_runs_s": [round(t, 3) for t in times[1:]],
        "whole_command_median_s": round(statistics.median(walls), 3),
        "whole_command_runs_s": [round(t, 3) for t in walls],
        "psnr": summary.get("mean_psnr"),
        "ssim": summary.get("mean_ssim"),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
