"""Peak memory of a whole `vaecli roundtrip` (or encode/decode) run, this tree beside a baseline revision, in one run.

    python scripts/batch_memory.py photo4k.jpg --max-memory 1GiB --baseline-rev a3cf6b5

Each side runs the real command in a fresh interpreter under /usr/bin/time -v (its "Maximum
resident set size" is the peak RSS of the process); the baseline is `git archive`d into a temporary
folder and run with PYTHONPATH pointing at it. Prints one JSON document: per side the peak RSS, the
wall time and the reported metrics, so the two sides can be checked to agree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _tree(rev: str, into: Path) -> Path:
    """The package at `rev`, unpacked into `into`, with configs/ where the package finds them."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "vaecli" / "configs").symlink_to(into / "configs")
    return into


def _measure(tree: Path, command: list[str], workdir: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    p = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "vaecli", *command, "--json"], capture_output=True, text=True,
                       env=env, cwd=workdir)
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", p.stderr).group(1)
    doc = json.loads(p.stdout) if p.stdout.strip() else {}
    return {"exit_code": p.returncode, "peak_rss_gib": round(peak_kb / 2**20, 3), "wall": wall, "summary": doc.get("summary"),
            "errors": [r["error"] for r in doc.get("results", []) if r.get("error")]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="files or folders to run the command on")
    p.add_argument("--command", default="roundtrip", choices=["encode", "decode", "roundtrip"])
    p.add_argument("--max-memory", default="1GiB")
    p.add_argument("--baseline-rev", default=None, help="git revision to compare with (default: none, this tree only)")
    p.add_argument("--extra", default="--device cpu", help="more options for the command (one string)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vaecli-batch-memory-") as tmp:
        tmp = Path(tmp)
        sides = {"this tree": REPO}
        if args.baseline_rev:
            (tmp / "baseline").mkdir()
            sides[f"baseline {args.baseline_rev}"] = _tree(args.baseline_rev, tmp / "baseline")
        results = {}
        for name, tree in sides.items():
            work = tmp / name.replace(" ", "-")
            work.mkdir()
            inputs = [str(Path(i).resolve()) for i in args.inputs]
            extra = ["-o", str(work / "out")] if args.command != "roundtrip" else []
            results[name] = _measure(tree, [args.command, *inputs, "--max-memory", args.max_memory, *extra, *args.extra.split()], work)
    print(json.dumps({"command": args.command, "max_memory": args.max_memory, "inputs": args.inputs, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
