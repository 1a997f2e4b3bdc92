"""`vaecli models` (known models, where their weights were found, latent geometry) and `vaecli info FILE` (metadata)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .options import json_option
from .output import print_json


def _model_rows() -> list[dict]:
    from ..batch.models import digest_cache
    from ..config import VAEConfig
    from ..errors import CheckpointError, VaecliError
    from ..weights.locate import HF_CACHE, Found, locate
    from ..weights.registry import (
        DEFAULT_MODEL,
        config_only_names,
        load_registry,
        model_config,
    )

    digests = digest_cache()

    def unusable(found: Found) -> str | None:
        """Why a Hugging Face cache copy would be refused when loaded (its pin, or a broken link), else None.
        Hashed once per file: the digest is remembered while the file's size and mtime hold."""
        if found.source != HF_CACHE:
            return None
        try:
            locate(found.model, sha256_of=digests.sha256)
        except CheckpointError as e:
            return str(e)
        return None

    def row(name: str, found: Found | None, cfg: VAEConfig | None, description: str) -> dict:
        problem = None if found is None else unusable(found)
        return {
            "name": name,
            "cached": found is not None and found.found and problem is None,
            "found": None if found is None else found.source,  # package, vaecli-cache, hf-cache, or None (missing)
            "problem": problem,  # why the copy found would be refused (sha256 mismatch, broken link), else null
            "path": None if found is None or found.weights is None else str(found.weights),
            "latent_channels": None if cfg is None else cfg.latent_channels,
            "downsample_factor": None if cfg is None else cfg.downsample_factor,
            "scaling_factor": None if cfg is None else cfg.scaling_factor,
            "shift_factor": None if cfg is None else cfg.shift_factor,
            "description": description,
        }

    def where(name: str) -> Found:
        return locate(name, verify=False)  # directory entries; a Hugging Face cache copy is checked by `unusable`

    try:
        cfg = model_config(DEFAULT_MODEL)
    except VaecliError:
        cfg = None
    rows = [row(DEFAULT_MODEL, where(DEFAULT_MODEL), cfg, "embedded in the package; used when no --model is given")]
    for name, entry in load_registry().items():
        if entry.config is not None:  # LPIPS/VGG weights: listed by fetch-weights, not here
            rows.append(row(name, where(name), model_config(name), entry.description))
    for name, users in config_only_names().items():  # nameable with --weights FILE; nothing to fetch
        cfg = model_config(name)
        rows.append(row(name, None, cfg, f"no weights published: --model {name} --weights FILE" if not users else
                        f"the config of {', '.join(users)}; --model {name} --weights FILE"))
    return rows


def models(
    json_: json_option("{models: [{name, cached, found, problem, path, latent_channels, downsample_factor, scaling_factor, shift_factor, description}]}") = False,
) -> int:
    """List known models: where their weights were found, and their latent geometry.

    `found`: package (embedded), vaecli-cache, hf-cache (the Hugging Face cache, used in place, checked against the registry's sha256: "hf-cache (sha256 mismatch)" or "(broken link)" when it would be refused) or missing; --json gives each file's path and `problem`. `channels` x (H/`factor`, W/`factor`) is the latent of an HxW image. Fetch a model with `vaecli fetch-weights NAME`.
    """
    rows = _model_rows()
    if json_:
        print_json({"models": rows})
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=False)
    for col, justify in (("name", "left"), ("found", "left"), ("channels", "right"), ("factor", "right"), ("scale", "right"), ("shift", "right"), ("description", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for r in rows:
        table.add_row(
            r["name"],
            _where_label(r),
            "-" if r["latent_channels"] is None else str(r["latent_channels"]),
            "-" if r["downsample_factor"] is None else str(r["downsample_factor"]),
            "-" if r["scaling_factor"] is None else f"{r['scaling_factor']:g}",
            "-" if r["shift_factor"] is None else f"{r['shift_factor']:g}",
            r["description"],
        )
    Console(highlight=False, width=max(100, Console().width)).print(table)
    return 0


def _where_label(row: dict) -> str:
    """The table's `found` cell: where, and why a copy found there is unusable."""
    if row["found"] is None:
        return "missing"
    if row["problem"] is None:
        return row["found"]
    return f"{row['found']} ({'broken link' if 'broken link' in row['problem'] else 'sha256 mismatch'})"


def _describe(path: Path) -> dict:
    """What a file holds: kind, tensors (name, shape, dtype) and metadata (JSON values decoded)."""
    import numpy as np
    import torch
    from safetensors import SafetensorError, safe_open

    from ..errors import InputError
    from ..io.latents import LATENT_FORMAT_KEY
    from ..weights.checkpoints import CONFIG_METADATA_KEY

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    info: dict = {"path": str(path), "bytes": path.stat().st_size}
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise InputError(f"{path}: not a readable .npy array ({e})") from None
        return info | {"kind": "array", "tensors": [{"name": "", "shape": list(arr.shape), "dtype": str(arr.dtype)}], "metadata": {}}
    if suffix == ".pt":
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise InputError(f"{path}: not loadable with weights_only=True ({str(e).splitlines()[0][:200]})") from None
        tensors = obj.items() if isinstance(obj, dict) else [("", obj)]
        rows = [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in tensors if isinstance(v, torch.Tensor)]
        return info | {"kind": "torch", "tensors": rows, "metadata": {}}
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            rows = []
            for k in f.keys():
                sl = f.get_slice(k)
                rows.append({"name": k, "shape": list(sl.get_shape()), "dtype": sl.get_dtype()})
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable safetensors file ({e})") from None
    kind = "latent" if LATENT_FORMAT_KEY in meta else "weights" if CONFIG_METADATA_KEY in meta else "safetensors"
    decoded = {}
    for k, v in meta.items():
        try:
            decoded[k] = json.loads(v) if k in ("config", CONFIG_METADATA_KEY) else v
        except json.JSONDecodeError:
            decoded[k] = v
    if kind == "weights":
        rows = [{"name": f"{len(rows)} tensors", "shape": [sum(int(np.prod(r["shape"])) for r in rows)], "dtype": rows[0]["dtype"] if rows else ""}]
    return info | {"kind": kind, "tensors": rows, "metadata": decoded}


def info(
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="Latent files (.safetensors, .npy, .pt) or weights files.")],
    json_: json_option("{files: [{path, bytes, kind, tensors: [{name, shape, dtype}], metadata}]}") = False,
) -> int:
    """Print what a latent or weights file holds: tensors, shapes and its metadata (model, config, source, size).

    Exit codes: 0 all files read; 1 some could not be read; 2 usage error.
    """
    import sys

    from rich.console import Console

    from ..errors import InputError

    described, failed = [], False
    for path in files:
        try:
            described.append(_describe(path))
        except InputError as e:
            print(f"failed: {e}", file=sys.stderr)
            failed = True
    if json_:
        print_json({"files": described})
        return int(failed)
    console = Console(highlight=False, width=max(100, Console().width))
    for d in described:
        console.print(f"{d['path']}  ({d['kind']}, {d['bytes']} bytes)", markup=False)
        for t in d["tensors"]:
            label = f"  tensor {t['name']}" if t["name"] else "  tensor"
            console.print(f"{label}: {t['dtype']} {t['shape']}", markup=False)
        for k, v in sorted(d["metadata"].items()):
            console.print(f"  {k}: {json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v}", markup=False)
    return int(failed)
