"""Helpers the CLI tests share: run the real command (in-process or as a subprocess), make real images, snapshot folders."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaecli.cli.app import main


def vaecli(*args, env=None, timeout=120, cwd=None) -> subprocess.CompletedProcess:
    """The real `vaecli` executable (python -m vaecli) in a fresh interpreter."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "vaecli", *map(str, args)], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd)


def run_main(capsys, *args) -> tuple[int, str, str]:
    """The CLI's entry point in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


def run_json(capsys, *args) -> tuple[int, dict, str]:
    """run_main with --json: (exit code, the JSON document, stderr)."""
    code, out, err = run_main(capsys, *args, "--json")
    return code, json.loads(out) if out.strip() else {}, err


def by_name(doc: dict) -> dict[str, dict]:
    return {Path(r["input"]).name: r for r in doc["results"]}


def noise_image(path: Path, w: int, h: int, seed: int, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, channels), dtype=np.uint8), mode).save(path)
    return path


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `root` (hidden ones included)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}
