"""Side-by-side speed of vaecli and diffusers on the same random weights, in one process.

Why one run: the machines this is run on are shared and clocks drift, so a ratio is only
meaningful when both models are timed in the same process, interleaved repeat by repeat.

    python scripts/bench.py --device cpu --sizes 512 --batch-sizes 1 --dtypes fp32 --repeats 3
    python scripts/bench.py --device cuda --sizes 512 --batch-sizes 8 --dtypes bf16 --compile --json out.json
    python scripts/bench.py --device cuda --tiled --sizes 4096 --dtypes bf16
    python scripts/bench.py --device cuda --e2e --sizes 512 --batch-sizes 8 --dtypes bf16

Modes:
- default: encode and decode timings (median after warm-up; CUDA events on CUDA, perf_counter on
  CPU), images/s, peak memory (CUDA max_memory_allocated; on CPU the peak RSS, reset between
  measurements through /proc/self/clear_refs), achieved TFLOP/s (FLOPs counted once with
  torch.utils.flop_counter on the meta device), and the vaecli/diffusers speed ratio;
- --tiled: vaecli's exact tiled decode vs diffusers' enable_tiling(): time, peak memory, and PSNR
  of each against vaecli's untiled decode (skipped where untiled does not fit: --no-untiled);
- --e2e: `vaecli encode` over a folder of generated JPEGs (a subprocess) vs model-only images/s
  (the subprocess time includes interpreter and torch start-up: use enough images);
- --layers: the layer-level A/B behind vaecli.model's CPU choices.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vaecli.cli.options import parse_bytes
from vaecli.config import VAEConfig, load_config, shipped_config
from vaecli.model import AutoencoderKL
from vaecli.quality import metrics
from vaecli.runtime.device import DTYPES
from vaecli.weights.checkpoints import load_weights
from vaecli.weights.keymap import diffusers_vae_kwargs

try:
    import diffusers
except ImportError:  # the benchmark still times vaecli alone
    diffusers = None


# ---------------------------------------------------------------- models


def diffusers_model(cfg: VAEConfig, seed: int):
    """diffusers' AutoencoderKL with `cfg`'s architecture and seeded random weights."""
    torch.manual_seed(seed)
    model = diffusers.AutoencoderKL(**diffusers_vae_kwargs(cfg))
    return model.eval().requires_grad_(False)


def build_pair(cfg: VAEConfig, device: torch.device, dtype: torch.dtype, seed: int, workdir: Path):
    """(vaecli model, diffusers model or None) holding the same weights."""
    from safetensors.torch import save_file

    weights = workdir / "bench-weights.safetensors"
    if diffusers is not None:
        ref = diffusers_model(cfg, seed)
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(weights))
        ref = ref.to(device=device, dtype=dtype)
    else:
        ref = None
        torch.manual_seed(seed)
        save_file({k: v.contiguous() for k, v in AutoencoderKL(cfg).state_dict().items()}, str(weights))
    ours = load_weights(cfg, weights, device=device, dtype=dtype)
    return ours, ref


def photo(image: str, size: int) -> torch.Tensor:
    """A photograph (a file, or scikit-image's `astronaut`) resized to size x size: (1, 3, size, size) in [0, 1]."""
    if image == "astronaut":
        import skimage.data

        x = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float() / 255  # (3, H, W) in [0, 1]
    else:
        from vaecli.io.images import read_image

        x = read_image(Path(image))
    return torch.nn.functional.interpolate(x[None], size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)


def agreement(ours, ref, device: torch.device, dtype: torch.dtype, size: int = 128) -> dict:
    """Largest |vaecli - diffusers| relative to the output's scale, for encode (mean) and decode, on a
    photograph (its GroupNorm groups have large means, which zero-mean noise would not exercise)."""
    x = (photo("astronaut", size) * 2 - 1).to(device, dtype)
    with torch.inference_mode():
        m_ours = ours.encode(x).mean
        m_ref = ref.encode(x).latent_dist.mean
        z = m_ref
        d_ours = ours.decode(z)
        d_ref = ref.decode(z).sample

    def rel(a, b):
        return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))

    return {"encode_rel_err": rel(m_ours, m_ref), "decode_rel_err": rel(d_ours, d_ref)}


# ---------------------------------------------------------------- measuring


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call: CUDA events on CUDA (no host-side noise), perf_counter elsewhere."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved_medians(fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds per function, alternating the order each repeat so drift hits all alike."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names if r % 2 == 0 else reversed(names):
            times[n].append(time_once(fns[n], device))
    return {n: statistics.median(t) for n, t in times.items()}


def _reset_cpu_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _cpu_peak_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def peak_memory(fn: Callable[[], object], device: torch.device) -> tuple[int, str, float]:
    """(bytes, what was measured, seconds) of one call of `fn`."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated", time.perf_counter() - t0
    exact = _reset_cpu_peak()
    t0 = time.perf_counter()
    fn()
    return _cpu_peak_bytes(), "peak RSS" if exact else "peak RSS since start (clear_refs unavailable)", time.perf_counter() - t0


def count_flops(model: AutoencoderKL, mode: str, shape: tuple[int, ...]) -> int:
    """FLOPs (2 x multiply-adds) of one call, counted on the meta device: no compute, no memory."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        meta_model = AutoencoderKL(model.config).eval()
        x = torch.empty(shape)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        meta_model.encode(x).mean if mode == "encode" else meta_model.decode(x)
    return int(counter.get_total_flops())


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR in dB of decoded pixels in [-1, 1], by vaecli.quality.metrics (what `vaecli roundtrip` reports)."""
    return float(metrics.psnr(((a.float() + 1) / 2).clamp(0, 1), ((b.float() + 1) / 2).clamp(0, 1)).mean())


def prepare(model, *, channels_last: bool, compile_: bool):
    """The model as benchmarked: optionally channels_last and torch.compile'd (start-up cost excluded)."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile_:
        model.encoder = torch.compile(model.encoder)
        model.decoder = torch.compile(model.decoder)
    return model


# ---------------------------------------------------------------- modes


def bench_speed(args, cfg: VAEConfig, device: torch.device, workdir: Path) -> list[dict]:
    rows = []
    f = cfg.downsample_factor
    for dname in args.dtypes:
        dtype = DTYPES[dname]
        ours, ref = build_pair(cfg, device, dtype, args.seed, workdir)
        check = agreement(ours, ref, device, dtype) if ref is not None else {}
        ours = prepare(ours, channels_last=args.channels_last, compile_=args.compile)
        if ref is not None:
            ref = prepare(ref, channels_last=args.channels_last, compile_=args.compile)
        for size in args.sizes:
            for bs in args.batch_sizes:
                x = (torch.rand(bs, 3, size, size) * 2 - 1).to(device, dtype)
                z = torch.randn(bs, cfg.latent_channels, size // f, size // f).to(device, dtype)
                if args.channels_last:
                    x, z = x.contiguous(memory_format=torch.channels_last), z.contiguous(memory_format=torch.channels_last)
                for mode in args.modes:
                    fns = {"vaecli": (lambda: ours.encode(x).mean) if mode == "encode" else (lambda: ours.decode(z))}
                    if ref is not None:
                        fns["diffusers"] = (lambda: ref.encode(x).latent_dist.mean) if mode == "encode" else (lambda: ref.decode(z).sample)
                    with torch.inference_mode():
                        med = interleaved_medians(fns, device, args.warmup, args.repeats)
                        mem = {n: peak_memory(fn, device) for n, fn in fns.items()}
                    flops = count_flops(ours, mode, tuple(x.shape if mode == "encode" else z.shape))
                    row = {
                        "mode": mode, "size": size, "batch": bs, "dtype": dname, "device": str(device),
                        "channels_last": args.channels_last, "compile": args.compile,
                        "flops_per_call": flops, **check,
                    }
                    for n, t in med.items():
                        row[f"{n}_s"] = t
                        row[f"{n}_img_per_s"] = bs / t
                        row[f"{n}_tflops"] = flops / t / 1e12
                        row[f"{n}_peak_bytes"], row["memory_measure"], _ = mem[n]
                    if "diffusers_s" in row:
                        row["speedup_vs_diffusers"] = row["diffusers_s"] / row["vaecli_s"]
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def tiled_latent(vae, image: str | None, size: int, device, dtype) -> torch.Tensor:
    """The latent to decode: a photograph (`photo`) encoded (mode), or Gaussian noise when no image is given."""
    f = vae.downsample_factor
    if image is None:
        g = torch.Generator().manual_seed(2)
        return torch.randn(1, vae.latent_channels, size // f, size // f, generator=g).to(device, dtype)
    from vaecli.runtime.executor import Runner

    return Runner(vae).encode((photo(image, size) * 2 - 1).to(device, dtype)).mode().to(dtype)


def bench_tiled(args, cfg: VAEConfig, device: torch.device, workdir: Path) -> list[dict]:
    from vaecli.runtime.tiling import tiled_decode

    rows = []
    f = cfg.downsample_factor
    for dname in args.dtypes:
        dtype = DTYPES[dname]
        if args.weights is not None:  # a trained model (e.g. the embedded default); no diffusers twin
            from vaecli.api import load_vae

            ours, ref = load_vae(weights=args.weights, device=device, dtype=dtype), None
            f = ours.downsample_factor
        else:
            ours, ref = build_pair(cfg, device, dtype, args.seed, workdir)
        for size in args.sizes:
            z = tiled_latent(ours, args.image, size, device, dtype)
            fns = {"vaecli_tiled": lambda: tiled_decode(ours, z, tile_size=args.tile_size, storage_budget=args.storage_budget)}
            if ref is not None:  # diffusers tiles with the same tile side (its default overlap, 25%)
                ref.enable_tiling()
                ref.tile_sample_min_size = args.tile_size
                ref.tile_latent_min_size = args.tile_size // f
                fns["diffusers_tiled"] = lambda: ref.decode(z).sample
            if not args.no_untiled:
                fns["vaecli_untiled"] = lambda: ours.decode(z)
            row = {"mode": "tiled-decode", "size": size, "dtype": dname, "device": str(device), "tile_size": args.tile_size}
            row["storage_budget"] = args.storage_budget
            with torch.inference_mode():
                # --repeats 0: one call each gives both time and peak (for sizes too slow to repeat)
                med = interleaved_medians(fns, device, args.warmup, args.repeats) if args.repeats > 0 else {}
                outs = {}
                for n, fn in fns.items():
                    holder = {}
                    row[f"{n}_peak_bytes"], row["memory_measure"], once = peak_memory(lambda: holder.setdefault("y", fn()), device)
                    outs[n] = holder["y"].cpu()
                    row[f"{n}_s"] = med.get(n, once)
            if "vaecli_untiled" in outs:
                for n in outs:
                    if n != "vaecli_untiled":
                        row[f"{n}_psnr_vs_untiled_db"] = psnr(outs[n], outs["vaecli_untiled"])
            if "diffusers_tiled_s" in row:
                row["speedup_vs_diffusers_tiled"] = row["diffusers_tiled_s"] / row["vaecli_tiled_s"]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def bench_e2e(args, cfg: VAEConfig, device: torch.device, workdir: Path) -> list[dict]:
    """Times the `vaecli encode` command over generated JPEGs against the model alone."""
    import numpy as np
    from PIL import Image

    from vaecli.weights.checkpoints import save_weights

    exe = shutil.which("vaecli")
    if exe is None:
        raise SystemExit("--e2e needs the vaecli executable on PATH")
    rows = []
    for dname in args.dtypes:
        dtype = DTYPES[dname]
        ours, _ = build_pair(cfg, device, dtype, args.seed, workdir)
        weights = workdir / "e2e.safetensors"
        save_weights(ours, weights)
        for size in args.sizes:
            src = workdir / f"jpegs-{size}"
            src.mkdir(exist_ok=True)
            rng = np.random.default_rng(0)
            for i in range(args.e2e_images):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(src / f"{i:05d}.jpg", quality=90)
            for bs in args.batch_sizes:
                x = (torch.rand(bs, 3, size, size) * 2 - 1).to(device, dtype)
                with torch.inference_mode():
                    model_s = interleaved_medians({"m": lambda: ours.encode(x).mean}, device, args.warmup, args.repeats)["m"]
                out = workdir / f"latents-{size}-{bs}"
                cmd = [exe, "encode", str(src), "-o", str(out), "--weights", str(weights), "--device", str(device),
                       "--dtype", dname, "--batch-size", str(bs), "--quiet"]
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                e2e_s = time.perf_counter() - t0
                row = {"mode": "e2e-encode", "size": size, "batch": bs, "dtype": dname, "device": str(device), "images": args.e2e_images,
                       "command": " ".join(cmd), "returncode": proc.returncode,
                       "model_img_per_s": bs / model_s, "e2e_img_per_s": args.e2e_images / e2e_s}
                row["e2e_fraction_of_model"] = row["e2e_img_per_s"] / row["model_img_per_s"]
                if proc.returncode != 0:
                    row["stderr"] = proc.stderr[-2000:]
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                shutil.rmtree(out, ignore_errors=True)
    return rows


def bench_layers(args, cfg: VAEConfig, device: torch.device, workdir: Path) -> list[dict]:
    """The layer-level A/B behind the CPU choices in vaecli.model, at the SD decoder's shapes:
    torch's GroupNorm+Swish on NCHW (what runs) vs on channels_last (one-pass variance: fast but
    inexact), with each one's error against float64 on an input of mean 3 and std 0.1; a ResnetBlock
    fed NCHW vs channels_last; nearest-x2 + 3x3 conv vs the sub-pixel form."""
    import torch.nn.functional as F

    from vaecli.model.blocks import ResnetBlock, Upsample

    def row(mode, channels, side, med, baseline, candidate, **extra):
        r = {"mode": f"layer {mode}", "size": side, "channels": channels, "device": str(device), "candidate": candidate,
             "baseline_s": med[baseline], "candidate_s": med[candidate], "speedup": med[baseline] / med[candidate], **extra}
        rows.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)

    rows = []
    torch.manual_seed(args.seed)
    with torch.inference_mode():
        for channels, side in ((128, 256), (512, 64)):
            block = ResnetBlock(in_channels=channels, out_channels=channels, temb_channels=0).eval().to(device)
            x = torch.randn(1, channels, side, side, device=device) * 0.1 + 3  # a photograph's large group means
            x_cl = x.contiguous(memory_format=torch.channels_last)
            norm = block.norm1
            want = F.silu(F.group_norm(x.double(), norm.num_groups, norm.weight.double(), norm.bias.double(), norm.eps))

            def torch_norm_swish(t):
                return F.silu(F.group_norm(t, norm.num_groups, norm.weight, norm.bias, norm.eps), inplace=True)

            errors = {f"{name}_rel_err": float((torch_norm_swish(t).double() - want).abs().max() / want.abs().max())
                      for name, t in (("nchw", x), ("channels_last", x_cl))}
            med = interleaved_medians({"nchw": lambda: torch_norm_swish(x), "channels_last": lambda: torch_norm_swish(x_cl)},
                                      device, args.warmup, args.repeats)
            row("groupnorm+swish", channels, side, med, "nchw", "channels_last", **errors)
            med = interleaved_medians({"nchw": lambda: block(x), "channels_last": lambda: block(x_cl)}, device, args.warmup, args.repeats)
            row("resnet", channels, side, med, "nchw", "channels_last")
        for channels, side in ((512, 64), (256, 128)):
            up = Upsample(channels, True).eval().to(device)
            x = torch.randn(1, channels, side, side, device=device)
            fns = {"interpolate+conv": lambda: up.conv(F.interpolate(x, scale_factor=2.0, mode="nearest")), "subpixel": lambda: up._subpixel(x)}
            row("upsample", channels, side, interleaved_medians(fns, device, args.warmup, args.repeats), "interpolate+conv", "subpixel")
    return rows


# ---------------------------------------------------------------- output


COLUMNS = {  # row key -> table header; the JSON file keeps every key
    "mode": "mode", "size": "size", "batch": "B", "dtype": "dtype",
    "vaecli_img_per_s": "vaecli img/s", "diffusers_img_per_s": "diffusers img/s",
    "speedup_vs_diffusers": "ratio", "vaecli_tflops": "vaecli TFLOP/s", "diffusers_tflops": "diffusers TFLOP/s",
    "vaecli_peak_bytes": "vaecli GiB", "diffusers_peak_bytes": "diffusers GiB",
    "encode_rel_err": "enc rel err", "decode_rel_err": "dec rel err",
    "vaecli_tiled_s": "vaecli tiled s", "diffusers_tiled_s": "diffusers tiled s", "vaecli_untiled_s": "untiled s",
    "vaecli_tiled_peak_bytes": "tiled GiB", "diffusers_tiled_peak_bytes": "diffusers tiled GiB",
    "vaecli_untiled_peak_bytes": "untiled GiB", "vaecli_tiled_psnr_vs_untiled_db": "vaecli PSNR dB",
    "diffusers_tiled_psnr_vs_untiled_db": "diffusers PSNR dB", "speedup_vs_diffusers_tiled": "ratio",
    "channels": "C", "candidate": "candidate", "baseline_s": "baseline s", "candidate_s": "candidate s", "speedup": "speedup",
    "nchw_rel_err": "NCHW rel err", "channels_last_rel_err": "channels_last rel err",
    "model_img_per_s": "model img/s", "e2e_img_per_s": "e2e img/s", "e2e_fraction_of_model": "e2e/model",
}


def show(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        return
    keys = [k for k in COLUMNS if any(k in r for r in rows)]
    table = Table(title=f"vaecli bench ({rows[0].get('device', '')}, memory: {rows[0].get('memory_measure', '-')})")
    for k in keys:
        table.add_column(COLUMNS[k], justify="right")

    def fmt(k, v):
        if v == "":
            return "-"
        if k.endswith("_bytes"):
            return f"{v / 2**30:.2f}"
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    for r in rows:
        table.add_row(*(fmt(k, r.get(k, "")) for k in keys))
    Console(width=220).print(table)  # wide even when piped: the table is the report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="sd-vae-ft-mse", help="shipped config name or YAML path (default: the SD VAE)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[512])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    p.add_argument("--dtypes", nargs="+", default=["fp32"], choices=sorted(DTYPES))
    p.add_argument("--modes", nargs="+", default=["encode", "decode"], choices=["encode", "decode"])
    p.add_argument("--repeats", type=int, default=5, help="timed calls (0 with --tiled: time the one peak-memory call)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--channels-last", action="store_true", help="both models and inputs in channels_last")
    p.add_argument("--compile", action="store_true", help="torch.compile both (compile time excluded: it is in warm-up)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--tiled", action="store_true", help="tiled decode: vaecli exact tiling vs diffusers enable_tiling()")
    p.add_argument("--tile-size", type=int, default=512, help="vaecli tile side in pixels (--tiled)")
    p.add_argument("--no-untiled", action="store_true", help="--tiled: skip the untiled reference (too big)")
    p.add_argument(
        "--storage-budget",
        type=parse_bytes,
        default=None,
        help="--tiled: bytes of whole activations vaecli may keep (e.g. 6G); larger ones are recomputed",
    )
    p.add_argument("--weights", type=Path, default=None, help="--tiled: a trained vaecli weights file instead of random weights")
    p.add_argument("--image", default=None, help="--tiled: decode this photo's latent (a path, or `astronaut`) instead of noise")
    p.add_argument("--layers", action="store_true", help="layer-level A/B: GroupNorm and ResnetBlock layouts, sub-pixel upsample")
    p.add_argument("--e2e", action="store_true", help="time `vaecli encode` over generated JPEGs vs the model alone")
    p.add_argument("--e2e-images", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write all rows to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # autotune conv algorithms for the fixed shapes timed here
    cfg = load_config(args.config) if Path(args.config).is_file() else shipped_config(args.config)
    with tempfile.TemporaryDirectory(prefix="vaecli-bench-") as tmp:
        work = Path(tmp)
        if args.layers:
            rows = bench_layers(args, cfg, device, work)
        elif args.tiled:
            rows = bench_tiled(args, cfg, device, work)
        elif args.e2e:
            rows = bench_e2e(args, cfg, device, work)
        else:
            rows = bench_speed(args, cfg, device, work)
    show(rows)
    if args.json:
        env = {"torch": torch.__version__, "diffusers": getattr(diffusers, "__version__", None),
               "threads": torch.get_num_threads(), "argv": sys.argv[1:], "cpu_count": os.cpu_count()}
        args.json.write_text(json.dumps({"env": env, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
