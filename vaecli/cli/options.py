"""Reusable `Annotated` option aliases, so every command spells and documents a shared option alike.

Nothing here imports torch: `vaecli --help` must answer without loading it.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer

MODEL_PANEL = "Model"
OUTPUT_PANEL = "Output"


class Dtype(StrEnum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class Alpha(StrEnum):
    white = "white"
    black = "black"


class ImageFormat(StrEnum):
    png = "png"
    jpg = "jpg"
    webp = "webp"
    tiff = "tiff"


class VideoFormat(StrEnum):
    mp4 = "mp4"
    gif = "gif"


Model = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Registry model name (see `vaecli models`). Default: the embedded vaecli-default model.",
        rich_help_panel=MODEL_PANEL,
    ),
]
Config = Annotated[
    Optional[Path],
    typer.Option("--config", help="Model config YAML (ours or an LDM/sgm config.yaml); overrides the model's.", rich_help_panel=MODEL_PANEL),
]
Weights = Annotated[
    Optional[Path],
    typer.Option("--weights", help="Weights file (.safetensors); one written by vaecli needs no --config.", rich_help_panel=MODEL_PANEL),
]
AllowPickle = Annotated[
    bool,
    typer.Option("--allow-pickle", help="Allow .ckpt/.pt weights (loaded with weights_only=True).", rich_help_panel=MODEL_PANEL),
]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=MODEL_PANEL)]
DtypeOpt = Annotated[
    Dtype,
    typer.Option("--dtype", help="auto: bf16 on CUDA where supported, else fp16 on a GPU, fp32 on CPU.", rich_help_panel=MODEL_PANEL),
]
BatchSize = Annotated[
    Optional[int],
    typer.Option("--batch-size", "-b", min=1, help="Images (or video frames) per model call. Default: 8 on CUDA, 4 elsewhere."),
]
Output = Annotated[
    Optional[Path],
    typer.Option("-o", "--output", help="Output folder; folder inputs keep their relative paths under it.", rich_help_panel=OUTPUT_PANEL),
]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Redo outputs that are up to date, and replace existing files that vaecli did not make from this input. Inputs are never replaced.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]


def json_option(shape: str):
    """--json, its help naming the shape of the one document this command prints (checked against it by the tests)."""
    return Annotated[bool, typer.Option("--json", help=f"Print one JSON document on stdout: {shape}.", rich_help_panel=OUTPUT_PANEL)]


Json = json_option("{results: [{input, output, status, error, ...}], summary: {...}}")
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no table; errors still go to stderr.", rich_help_panel=OUTPUT_PANEL)]
AlphaOpt = Annotated[Alpha, typer.Option("--alpha", help="Background that transparent pixels are composited over.")]
Resize = Annotated[
    Optional[str],
    typer.Option("--resize", metavar="W[xH]", help="N: scale the shorter side to N; WxH: scale to exactly WxH (see --center-crop)."),
]
CenterCrop = Annotated[
    bool,
    typer.Option(
        "--center-crop",
        help="With --resize: fill the target size and crop the centre. Alone: crop to a multiple of the downsampling factor instead of padding.",
    ),
]


_BYTE_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "kb": 10**3, "m": 2**20, "mib": 2**20, "mb": 10**6,
               "g": 2**30, "gib": 2**30, "gb": 10**9, "t": 2**40, "tib": 2**40, "tb": 10**12}


def parse_bytes(text: str) -> int:
    """'4GiB', '512M', '1.5GB', '1000000' -> bytes (K/M/G alone are binary units, KB/MB/GB decimal)."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _BYTE_UNITS or float(m.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r}: give a positive size such as 4GiB, 512MiB or 8G", param_hint="--max-memory")
    return int(float(m.group(1)) * _BYTE_UNITS[unit])


MaxMemory = Annotated[
    Optional[int],
    typer.Option(
        "--max-memory",
        metavar="SIZE",
        parser=parse_bytes,
        help="Memory to stay within (e.g. 4GiB): on a CPU the whole process's (torch and the weights, images read ahead and "
        "outputs being written, the model's activations), on a GPU the model's device memory. Batches estimated to need more "
        "run tiled, exactly (same result); an out-of-memory error retries the batch tiled. "
        "Default: 90% of free GPU memory, or half the available RAM on CPU.",
        rich_help_panel=MODEL_PANEL,
    ),
]


Sample = Annotated[bool, typer.Option("--sample", help="Store a sample of the posterior instead of its mode (see --seed).")]
Seed = Annotated[
    int, typer.Option("--seed", help="Seed for --sample; each file's draw depends only on this and the file's name with its folder's (cats/0001.jpg).")
]
Fid = Annotated[
    bool,
    typer.Option("--fid", help="Also report rFID between the inputs and their reconstructions (pytorch-fid's Inception; "
                 "fetch it once with `vaecli fetch-weights pt_inception`). Biased upwards below a few thousand images."),
]
NoLpips = Annotated[bool, typer.Option("--no-lpips", help="Skip LPIPS even when its weights are cached.")]
