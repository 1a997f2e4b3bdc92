"""Peak memory (RSS) of loading a VAE with `vaecli.load_vae`, measured in this process, Linux only.

    python scripts/measure_load_rss.py WEIGHTS [--model NAME | --config YAML] [--json]
    python scripts/measure_load_rss.py --make-single-file OUT.safetensors --filler-gib 7   # a test file

The figure that matters is the rise over the process's RSS just before the load: Python with torch
and vaecli imported already holds a few hundred MB whatever is loaded. The kernel's high-water mark
(VmHWM) is reset right before the load (writing 5 to /proc/self/clear_refs), so the import's own peak
cannot hide the load's. `--make-single-file` writes an SD-like VAE (random, float32) under
`first_stage_model.` beside FILLER GiB of other float16 tensors, as a full checkpoint has.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FILLER_TENSOR_BYTES = 256 << 20  # each filler tensor: 128 Mi float16 values


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(weights: Path, model: str | None, config: str | None) -> dict:
    """Load on the CPU in float32, then encode one 64x64 image; RSS figures and the VAE's size, in MiB.

    The weights of a memory-mapped file are read when first used, so the peak is taken after an
    encode has touched every encoder weight, and the decoder's are summed in by reading them once.
    """
    import torch

    from vaecli.api import load_vae

    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    vae = load_vae(model, config=config, weights=weights, device="cpu", dtype="fp32")
    after_load = _status_kib("VmHWM")
    with torch.no_grad():
        vae.encode(torch.zeros(1, 3, 64, 64))
    touched = sum(float(t.double().sum()) for t in vae.state_dict().values())  # every weight's pages read
    peak = _status_kib("VmHWM")
    vae_bytes = sum(t.numel() * t.element_size() for t in vae.state_dict().values())
    return {
        "file_mib": round(weights.stat().st_size / 2**20, 1),
        "vae_mib": round(vae_bytes / 2**20, 1),
        "rss_before_mib": round(before / 1024, 1),
        "rise_after_load_mib": round((after_load - before) / 1024, 1),
        "rise_after_use_mib": round((peak - before) / 1024, 1),
        "weights_checksum": touched,
    }


def make_single_file(out: Path, filler_gib: float, dense: bool = False, config_name: str = "sdxl-vae") -> None:
    """A full-checkpoint-like safetensors file: the VAE under first_stage_model., then the filler.

    Written by hand (header, then data) so the filler never sits in memory whole. Reading a hole
    costs memory like reading data (the page cache fills with zeros), so a sparse filler still shows
    a loader that reads the whole file; `dense` writes random float16 values instead.
    """
    import torch

    from vaecli.config import shipped_config
    from vaecli.model import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(shipped_config(config_name))
    tensors = [(f"first_stage_model.{k}", v.contiguous()) for k, v in vae.state_dict().items()]
    n_filler = max(1, round(filler_gib * 2**30 / FILLER_TENSOR_BYTES))
    filler_shape = (FILLER_TENSOR_BYTES // 2 // 4096, 4096)
    entries, offset = {}, 0
    for name, t in tensors:
        size = t.numel() * t.element_size()
        entries[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    for i in range(n_filler):
        entries[f"model.diffusion_model.filler.{i}.weight"] = {"dtype": "F16", "shape": list(filler_shape), "data_offsets": [offset, offset + FILLER_TENSOR_BYTES]}
        offset += FILLER_TENSOR_BYTES
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    filler = torch.randn(filler_shape, generator=torch.Generator().manual_seed(1)).half().numpy().tobytes() if dense else b""
    with open(out, "wb") as f:
        f.write(len(header).to_bytes(8, "little"))  # safetensors: little-endian header length, JSON, data
        f.write(header)
        for _, t in tensors:
            f.write(t.numpy().tobytes())
        for _ in range(n_filler if dense else 0):
            f.write(filler)
        f.truncate(8 + len(header) + offset)  # without --dense the filler is a hole: zeros, no disk used


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", type=Path, nargs="?")
    p.add_argument("--model", default=None, help="registry model naming the architecture and scale")
    p.add_argument("--config", default=None, help="config YAML naming the architecture")
    p.add_argument("--make-single-file", type=Path, default=None, metavar="OUT")
    p.add_argument("--filler-gib", type=float, default=1.0)
    p.add_argument("--dense", action="store_true", help="write the filler's bytes instead of leaving a hole")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.make_single_file is not None:
        make_single_file(args.make_single_file, args.filler_gib, args.dense)
        return 0
    if args.weights is None:
        p.error("give WEIGHTS, or --make-single-file OUT")
    result = measure(args.weights, args.model, args.config)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
