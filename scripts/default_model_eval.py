"""Judge a default-model candidate as a user would: PSNR, SSIM and colour shift, at 512x512 and full size.

    python scripts/default_model_eval.py [--weights FILE] [--min-side 3000] [--no-full | --no-512] [--only NAME...] [--json FILE]

Each image goes through the path `vaecli roundtrip` takes (vaecli.runtime.executor.Runner: exact
tiling when the memory policy says so, reflect padding to a multiple of the downsampling factor,
the posterior's mode), the reconstruction is rounded to uint8 as a saved PNG is, and it is compared
with the uint8 input:
- PSNR and SSIM with vaecli.quality.metrics (the numbers `vaecli roundtrip` prints);
- colour shift: the largest of the three differences between the input's and the reconstruction's
  channel means, in 1/255 units (a cast that covers the image shows here even when PSNR hides it).
The 512 set is every held-out photograph's `eval_crop`; the full-size set is every held-out image at
its own size (`--min-side`: only those whose long side reaches it). Images come from
scripts/default_model_data.py; the wallpapers need its apt packages.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import default_model_data as data  # noqa: E402  (sibling module of this script)

from vaecli.api import load_vae  # noqa: E402
from vaecli.io.images import pad_to_multiple, to_uint8  # noqa: E402
from vaecli.model import AutoencoderKL  # noqa: E402
from vaecli.quality.metrics import psnr, ssim  # noqa: E402
from vaecli.runtime.executor import Runner  # noqa: E402


def reconstruct(vae: AutoencoderKL | Runner, photo: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> its (H, W, 3) uint8 reconstruction by the posterior's mode."""
    runner = vae if isinstance(vae, Runner) else Runner(vae)
    h, w = photo.shape[:2]
    x = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float().div(127.5).sub(1)  # (3, H, W) in [-1, 1]
    x, _ = pad_to_multiple(x, runner.vae.downsample_factor)
    rec = runner.decode(runner.encode(x[None].to(runner.device)).mode())[0, :, :h, :w]  # (3, H, W)
    return to_uint8((rec + 1) / 2)


def image_metrics(photo: np.ndarray, rec: np.ndarray) -> dict:
    """PSNR (dB), SSIM and colour shift (largest channel-mean difference, 1/255 units) of two uint8 images."""
    ref, out = (torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].double() / 255 for a in (photo, rec))  # (1, 3, H, W)
    shift = (ref.mean(dim=(2, 3)) - out.mean(dim=(2, 3))).abs().max().item() * 255
    return {"psnr": round(float(psnr(ref, out)), 3), "ssim": round(float(ssim(ref, out)), 4), "colour_shift": round(shift, 3)}


def summarise(per_image: dict) -> dict:
    """Means over the images, and the worst colour shift."""
    n = len(per_image)
    mean = {k: round(sum(v[k] for v in per_image.values()) / n, 3) for k in ("psnr", "ssim", "colour_shift")}
    mean["max_colour_shift"] = round(max(v["colour_shift"] for v in per_image.values()), 3)
    return mean


@torch.no_grad()
def evaluate_512(vae: AutoencoderKL, crops: list[tuple[str, np.ndarray]] | None = None) -> dict:
    """Held-out photographs' views (default: `held_out_crops()`): per image and mean. The model is put
    in eval mode and restored."""
    crops = data.held_out_crops() if crops is None else crops
    was_training = vae.training
    vae.eval()
    per_image = {name: image_metrics(crop, reconstruct(vae, crop)) for name, crop in crops}
    vae.train(was_training)
    return {"size": crops[0][1].shape[0], "images": per_image, "mean": summarise(per_image)}


@torch.no_grad()
def evaluate_full(vae: AutoencoderKL, min_side: int = 0, images=data.HELD_OUT, log=print, pack=None) -> dict:
    """Held-out images at full size (long side >= min_side; with `pack`, its downscaled copies): per image
    (with its size) and mean."""
    runner = Runner(vae.eval())
    per_image = {}
    for name, photo in data.held_out_full(min_side, images, pack):
        t0 = time.perf_counter()
        per_image[name] = {"size": f"{photo.shape[1]}x{photo.shape[0]}", **image_metrics(photo, reconstruct(runner, photo))}
        log(f"{name} {per_image[name]} {time.perf_counter() - t0:.1f} s")
    return {"min_side": min_side, "images": per_image, "mean": summarise(per_image)}


@torch.no_grad()
def evaluate_sizes(vae: AutoencoderKL, sides: list[int], images=data.HELD_OUT, log=print, pack=None) -> dict:
    """Each image resized (Lanczos) so that its long side is each of `sides` (never enlarged), whole:
    how quality and colour shift change with nothing but the image's size."""
    runner = Runner(vae.eval())
    out: dict = {}
    for img in images:
        photo = data.load_rgb(img.name, pack)
        for side in sides:
            if side > max(photo.shape[:2]):
                continue
            view = data.resize_long_side(photo, side)
            out.setdefault(img.short, {})[side] = image_metrics(view, reconstruct(runner, view))
            log(f"{img.short} {side} {out[img.short][side]}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=None, help="a weights file (default: the embedded model)")
    p.add_argument("--min-side", type=int, default=0, help="full-size set: images whose long side reaches this")
    p.add_argument("--no-full", action="store_true", help="only the 512x512 set")
    p.add_argument("--no-512", action="store_true", help="only the full-size set")
    p.add_argument("--only", nargs="+", default=None, help="only these held-out images (names as reported)")
    p.add_argument("--sides", type=int, nargs="+", default=None, help="also each image resized to these long sides")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (fp32 either way)")
    p.add_argument("--image-pack", type=Path, default=None, help="read the images from this pack (scripts/default_model_pack.py)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    vae = load_vae(weights=args.weights, device=args.device, dtype=torch.float32) if args.weights else load_vae(device=args.device, dtype=torch.float32)
    images = [i for i in data.HELD_OUT if args.only is None or i.short in args.only]
    results = {"weights": str(args.weights or "embedded vaecli-default")}
    if not args.no_512:
        results["512"] = evaluate_512(vae, data.held_out_crops(data.EVAL_SIZE, images, args.image_pack))
        print(json.dumps(results["512"]), flush=True)
    if not args.no_full:
        results["full"] = evaluate_full(vae, args.min_side, images, log=lambda m: print(m, flush=True), pack=args.image_pack)
        print(json.dumps(results["full"]["mean"]), flush=True)
    if args.sides:
        results["sides"] = evaluate_sizes(vae, args.sides, images, log=lambda m: print(m, flush=True), pack=args.image_pack)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
