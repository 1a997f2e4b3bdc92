"""Train vaecli's embedded default model: a small KL autoencoder on freely licensed sample photographs.

    python scripts/train_vae.py --out runs/default --steps 4000 \
        --export vaecli/assets/vaecli-default.safetensors

Loss (latent diffusion's recipe, minus LPIPS): L1 + MSE reconstruction, a tiny KL weight (1e-6)
that keeps the latent a well-behaved Gaussian without costing detail, and optionally (`--gan`) a
PatchGAN hinge loss whose weight adapts to the ratio of the reconstruction and GAN gradients at the
decoder's last layer. Batches are random crops with scale jitter, flips and channel permutations
(few colour photographs exist under a free licence in installable packages, so colour order is
augmented). A checkpoint is written every `--ckpt-every` steps and `--resume` continues from it
exactly (model, optimisers, step, random generators). At the end the latent scale is set to 1/std of
the latents of training crops (LDM's scale_by_std) and the weights are exported as a self-describing
fp16 safetensors file whose metadata records the command, data, commit, steps and held-out metrics.

Held-out photographs (scripts/default_model_data.py) are never sampled for training; they are
evaluated every `--eval-every` steps to show progress, and `--stop-at-psnr` may end the run early.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import default_model_data as data  # noqa: E402  (sibling module of this script)

from vaecli.config import VAEConfig  # noqa: E402
from vaecli.io.atomic import atomic_path  # noqa: E402
from vaecli.io.images import to_uint8  # noqa: E402
from vaecli.model import AutoencoderKL  # noqa: E402
from vaecli.model.discriminator import NLayerDiscriminator  # noqa: E402
from vaecli.quality.metrics import psnr, ssim  # noqa: E402
from vaecli.runtime.device import pick_device  # noqa: E402
from vaecli.weights.checkpoints import metadata_json, save_weights  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CHECKPOINT = "checkpoint.pt"
GEOMETRY_KEYS = ("ch", "ch_mult", "num_res_blocks", "z_channels", "attn_type", "norm_num_groups")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/default-vae"), help="run folder: checkpoint and log")
    p.add_argument("--export", type=Path, default=None, help="final weights file (default: OUT/vaecli-default.safetensors)")
    p.add_argument("--steps", type=int, default=4000, help="total optimiser steps (the LR schedule spans them)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start from the weights another run's checkpoint.pt exports (its EMA when it kept one; same parameter "
        "shapes: the geometry given here may change norm_num_groups), with a fresh optimiser and schedule",
    )
    # geometry: f4 (two downsamples), 8 latent channels, no mid-block attention; see docs/default-model.md.
    # GroupNorm erases each group's mean and scale: groups of 1-2 channels (32 groups over 32-64 channels)
    # lose the image's global colour, hence 64 channels at both ends and 8 groups (4-8 channels each).
    p.add_argument("--ch", type=int, default=32)
    p.add_argument("--ch-mult", type=int, nargs="+", default=[2, 1, 2])
    p.add_argument("--num-res-blocks", type=int, default=1)
    p.add_argument("--z-channels", type=int, default=8)
    p.add_argument("--attn-type", default="none", choices=["vanilla", "linear", "none"])
    p.add_argument(
        "--norm-num-groups",
        type=int,
        default=8,
        help="GroupNorm groups (32 in published VAEs); fewer, wider groups carry global colour through the norms",
    )
    # data and optimisation
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=128, help="training crop side in pixels")
    p.add_argument("--scale-min", type=float, default=0.6, help="scale jitter: crops are resized by a factor in [min, max]")
    p.add_argument("--scale-max", type=float, default=1.2)
    p.add_argument(
        "--colour-jitter",
        type=float,
        default=0.0,
        help="per-channel gain in [1-J, 1+J] and offset in [-J/2, J/2]: teaches absolute colours the few "
        "training photos lack (saturated hues, dark backgrounds), which GroupNorm otherwise lets drift",
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="keep an exponential moving average of the weights with this decay (e.g. 0.999); held-out "
        "metrics and the export then use it (0: off)",
    )
    p.add_argument("--lr-final", type=float, default=5e-5, help="cosine decay ends here")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--l1-weight", type=float, default=1.0)
    p.add_argument("--mse-weight", type=float, default=1.0)
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--init-logvar", type=float, default=-8.0, help="initial posterior logvar (encoder bias)")
    p.add_argument("--init-offset", type=float, default=3.0, help="opposite offsets per GroupNorm pair before conv_out (0: off)")
    p.add_argument("--gan", action="store_true", help="add the PatchGAN (ActNorm) adversarial loss")
    p.add_argument("--disc-start", type=int, default=0, help="step at which the GAN loss starts")
    p.add_argument("--disc-weight", type=float, default=0.5)
    p.add_argument("--disc-lr", type=float, default=2e-4)
    # bookkeeping
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]; bf16 autocast on CUDA")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-size", type=int, default=512, help="held-out centre crop side")
    p.add_argument("--stop-at-psnr", type=float, default=None, help="end early once mean held-out PSNR reaches this")
    p.add_argument("--scale-batches", type=int, default=16, help="batches of training crops for the latent std")
    return p.parse_args(argv)


# ---------------------------------------------------------------- data


class CropSampler:
    """Random training crops in [-1, 1]: scale jitter, horizontal flips, channel permutations.

    Colour photographs are drawn twice as often as the greyscale ones, which teach structure only.
    All randomness comes from one generator, so a resumed run draws the same batches.
    """

    def __init__(
        self,
        images: list[np.ndarray],
        weights: list[float],
        crop: int,
        scale_range: tuple[float, float],
        seed: int,
        colour_jitter: float = 0.0,
    ):
        self.images = [torch.from_numpy(np.array(a)).permute(2, 0, 1).float().div(255) for a in images]  # (3, H, W) in [0, 1]
        self.probs = torch.tensor(weights, dtype=torch.float64) / sum(weights)
        self.crop = crop
        self.log_scale = (math.log(scale_range[0]), math.log(scale_range[1]))
        self.gen = torch.Generator().manual_seed(seed)
        self.colour_jitter = colour_jitter

    def _uniform(self) -> float:
        return torch.rand((), generator=self.gen).item()

    def one(self) -> torch.Tensor:
        img = self.images[torch.multinomial(self.probs, 1, generator=self.gen).item()]
        _, h, w = img.shape
        scale = math.exp(self.log_scale[0] + (self.log_scale[1] - self.log_scale[0]) * self._uniform())
        side = min(round(self.crop / scale), h, w)  # source region that becomes one crop
        top = int(self._uniform() * (h - side + 1))
        left = int(self._uniform() * (w - side + 1))
        x = img[:, top : top + side, left : left + side].unsqueeze(0)  # (1, 3, side, side)
        if side != self.crop:
            x = F.interpolate(x, size=(self.crop, self.crop), mode="bilinear", antialias=True, align_corners=False)
        if self._uniform() < 0.5:
            x = x.flip(3)
        if self._uniform() < 0.5:
            x = x[:, torch.randperm(3, generator=self.gen)]
        if self.colour_jitter > 0:
            j = self.colour_jitter
            gain = 1 + j * (2 * torch.rand(1, 3, 1, 1, generator=self.gen) - 1)  # per channel, [1-j, 1+j]
            offset = j * (torch.rand(1, 3, 1, 1, generator=self.gen) - 0.5)  # per channel, [-j/2, j/2]
            x = x * gain + offset
        return x.clamp(0, 1)[0]  # (3, crop, crop)

    def batch(self, n: int) -> torch.Tensor:
        return torch.stack([self.one() for _ in range(n)]) * 2 - 1  # (n, 3, crop, crop) in [-1, 1]


def training_sampler(args) -> CropSampler:
    images = [data.load_rgb(i.name) for i in data.TRAIN]
    weights = [2.0 if _is_colour(a) else 1.0 for a in images]
    return CropSampler(images, weights, args.crop, (args.scale_min, args.scale_max), args.seed, args.colour_jitter)


def _is_colour(a: np.ndarray) -> bool:
    return not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2]))


# ---------------------------------------------------------------- metrics


@torch.no_grad()
def evaluate(model: AutoencoderKL, size: int, device: torch.device) -> dict:
    """Held-out PSNR/SSIM of the posterior mode's reconstruction, quantised to uint8 as a saved PNG is;
    the same metric code as `vaecli roundtrip`, so the recorded numbers are the ones users see."""
    was_training = model.training
    model.eval()
    per_image = {}
    for name, crop in data.held_out_crops(size):
        x = torch.from_numpy(crop).permute(2, 0, 1).float().div(127.5).sub(1).unsqueeze(0).to(device)  # (1, 3, S, S)
        rec = torch.from_numpy(to_uint8((model.decode(model.encode(x).mode())[0] + 1) / 2))  # (S, S, 3) uint8
        ref, out = (t.permute(2, 0, 1)[None].double() / 255 for t in (torch.from_numpy(crop), rec))  # (1, 3, S, S)
        per_image[name] = {"psnr": round(float(psnr(ref, out)), 3), "ssim": round(float(ssim(ref, out)), 4)}
    model.train(was_training)
    mean = {k: round(sum(v[k] for v in per_image.values()) / len(per_image), 3) for k in ("psnr", "ssim")}
    return {"size": size, "images": per_image, "mean": mean}


# ---------------------------------------------------------------- losses


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_gan_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """||d rec / d w|| / ||d g / d w|| at the decoder's last layer: the GAN term never dominates (Esser et al.)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()


def lr_at(step: int, args) -> float:
    """Linear warm-up, then cosine decay from --lr to --lr-final at --steps."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr_final + 0.5 * (args.lr - args.lr_final) * (1 + math.cos(math.pi * t))


# ---------------------------------------------------------------- run state


def build_config(geometry: dict) -> VAEConfig:
    return VAEConfig(
        ch=geometry["ch"],
        ch_mult=tuple(geometry["ch_mult"]),
        num_res_blocks=geometry["num_res_blocks"],
        z_channels=geometry["z_channels"],
        attn_type=geometry["attn_type"],
        norm_num_groups=geometry.get("norm_num_groups", 32),  # checkpoints from before the option used 32
        resolution=256,
        embed_dim=None,  # no quant convs: the encoder emits the latent moments directly, as in SD3/FLUX
    )


@torch.no_grad()
def init_posterior_logvar(model: AutoencoderKL, logvar: float) -> None:
    """Start the posterior nearly deterministic: bias the encoder's logvar channels to `logvar`.

    At the default init the logvar is ~0, so posterior samples are unit-variance noise that swamps
    the small initial means and the decoder learns nothing until the encoder has pushed the variance
    down; with a KL weight of 1e-6 trained LDM autoencoders end with tiny variances anyway. Starting
    there saves much of a short CPU run.
    """
    conv = model.encoder.conv_out
    conv.bias[conv.out_channels // 2 :] = logvar  # moments are (mean, logvar) along channels


@torch.no_grad()
def init_group_offsets(model: AutoencoderKL, offset: float) -> None:
    """Give the features before each GroupNorm -> conv_out opposite constant offsets within each group.

    GroupNorm normalises each group of channels jointly, per image: the group's common mean and scale
    are erased, so the image's global colour (or the latent's global mean) can reach conv_out only as
    differences between the group's channels, measured against a known scale. Offsets alternating
    +offset / -offset along the channels (the bias of the last residual conv) are that known scale:
    each group's spread is dominated by them, so normalised values stay roughly linear in the
    absolute signal. The norm's shift lifts the negative channels into SiLU's linear part. Measured
    with GroupNorm(32) over 64 channels (pairs, the tightest case): held-out retina (strong colour
    cast) 11.5 -> 19.4 dB after 300 steps. Wider groups (`--norm-num-groups 8`) need this less.
    """
    for conv, norm in (
        (model.decoder.up[0].block[-1].conv2, model.decoder.norm_out),
        (model.encoder.mid.block_2.conv2, model.encoder.norm_out),
    ):
        conv.bias[0::2] += offset  # even/odd channels alternate within every group (groups hold >= 2)
        conv.bias[1::2] -= offset
        norm.bias[1::2] += 2.0


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def git_commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "scripts", "vaecli"], cwd=REPO, capture_output=True, text=True).stdout
        return rev + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def this_command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def _command_from_args(saved: dict) -> str:
    """Checkpoints written before commands were recorded kept their parsed arguments only."""
    flags = " ".join(f"--{k.replace('_', '-')} {shlex.quote(v)}" for k, v in saved.items() if v not in ("None", "False"))
    return f"python scripts/train_vae.py {flags} (reconstructed from the checkpoint's arguments)"


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


# ---------------------------------------------------------------- main


def train(args) -> int:
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.out / CHECKPOINT
    torch.manual_seed(args.seed)

    resumed = None
    if args.resume:
        if not ckpt_path.is_file():
            print(f"Error: {ckpt_path}: no checkpoint to resume from", file=sys.stderr)
            return 2
        resumed = torch.load(ckpt_path, map_location="cpu", weights_only=False)  # our own file, written below
        geometry = resumed["geometry"]
    else:
        geometry = {k: getattr(args, k) for k in GEOMETRY_KEYS}
    config = build_config(geometry)

    model = AutoencoderKL(config).to(device).train()
    step, history = 0, []
    commands: list[str] = []  # every invocation that built this checkpoint, in order (parent runs first)
    parent_steps = 0  # optimiser steps of the run the weights came from (--init-from)
    if resumed is None and args.init_from is not None:
        parent = torch.load(args.init_from, map_location="cpu", weights_only=False)  # our own run file
        model.load_state_dict(parent.get("ema") or parent["model"])  # the parent's exported weights
        parent_steps = parent.get("parent_steps", 0) + parent["step"]
        commands = parent.get("commands") or [_command_from_args(parent["args"])]
        log(f"initialised from {args.init_from} (step {parent['step']}, geometry {parent['geometry']})")
    elif resumed is None:
        init_posterior_logvar(model, args.init_logvar)
        init_group_offsets(model, args.init_offset)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.99))
    disc = NLayerDiscriminator(input_nc=3, ndf=32, n_layers=3, use_actnorm=True).to(device).train() if args.gan else None
    disc_opt = torch.optim.Adam(disc.parameters(), lr=args.disc_lr, betas=(0.5, 0.9)) if disc is not None else None
    sampler = training_sampler(args)
    noise = torch.Generator(device=device).manual_seed(args.seed + 1)  # posterior samples

    if resumed is not None:
        model.load_state_dict(resumed["model"])
        opt.load_state_dict(resumed["opt"])
        if disc is not None and resumed.get("disc") is not None:
            disc.load_state_dict(resumed["disc"])
            disc_opt.load_state_dict(resumed["disc_opt"])
        sampler.gen.set_state(resumed["sampler_rng"])
        noise.set_state(resumed["noise_rng"])
        torch.set_rng_state(resumed["torch_rng"])
        step, history = resumed["step"], resumed["history"]
        commands = resumed.get("commands") or [_command_from_args(resumed["args"])]
        parent_steps = resumed.get("parent_steps", 0)
        log(f"resumed from {ckpt_path} at step {step}")

    # the EMA starts from the weights training starts from; a resumed run restores it
    ema = None
    if args.ema > 0:
        ema = resumed["ema"] if resumed is not None and resumed.get("ema") is not None else {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    def averaged() -> AutoencoderKL:
        """The model to evaluate and export: the EMA weights when --ema, else the live ones."""
        if ema is None:
            return model
        copy = AutoencoderKL(config).to(device).eval()
        copy.load_state_dict(ema)
        return copy

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_path,
            {
                "step": step,
                "geometry": geometry,
                "model": model.state_dict(),
                "ema": ema,
                "opt": opt.state_dict(),
                "disc": disc.state_dict() if disc is not None else None,
                "disc_opt": disc_opt.state_dict() if disc_opt is not None else None,
                "sampler_rng": sampler.gen.get_state(),
                "noise_rng": noise.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": history,
                "commands": commands,
                "parent_steps": parent_steps,
                "args": {k: str(v) for k, v in vars(args).items()},
            },
        )

    commands.append(f"{this_command()}  # from step {step}")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model {config.to_json()} | {n_params / 1e6:.2f}M parameters | device {device} | steps {step}->{args.steps}")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    t_last, s_last = time.perf_counter(), step
    while step < args.steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        x = sampler.batch(args.batch_size).to(device)  # (B, 3, crop, crop)
        use_gan = disc is not None and step >= args.disc_start
        with autocast:
            posterior = model.encode(x)
            xrec = model.decode(posterior.sample(noise))
        xrec = xrec.float()
        rec_loss = args.l1_weight * (x - xrec).abs().mean() + args.mse_weight * (x - xrec).pow(2).mean()
        kl_loss = posterior.kl().float().mean()  # summed over latent elements, averaged over the batch
        loss = rec_loss + args.kl_weight * kl_loss
        g_loss = d_weight = torch.zeros((), device=device)
        if use_gan:
            disc.requires_grad_(False)
            with autocast:
                g_loss = -disc(xrec).float().mean()
            d_weight = args.disc_weight * adaptive_gan_weight(rec_loss, g_loss, model.decoder.get_last_layer())
            loss = loss + d_weight * g_loss
            disc.requires_grad_(True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    ema[k].lerp_(v.float(), 1 - args.ema)
        d_loss = torch.zeros((), device=device)
        if use_gan:
            with autocast:
                d_loss = hinge_d_loss(disc(x).float(), disc(xrec.detach()).float())
            disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            disc_opt.step()
        step += 1

        if step % args.log_every == 0 or step == args.steps:
            now = time.perf_counter()
            per_step = (now - t_last) / max(1, step - s_last)
            t_last, s_last = now, step
            eta = per_step * (args.steps - step) / 60
            extra = f" g {g_loss.item():.4f} dw {d_weight.item():.3g} d {d_loss.item():.4f}" if use_gan else ""
            log(
                f"step {step}/{args.steps} loss {loss.item():.4f} rec {rec_loss.item():.4f} kl {kl_loss.item():.0f}{extra} "
                f"lr {lr_at(step - 1, args):.2e} | {per_step:.2f} s/step, ETA {eta:.1f} min"
            )
        stop = False
        if step % args.eval_every == 0 or step == args.steps:
            metrics = evaluate(averaged(), args.eval_size, device)
            history.append({"step": step, **metrics["mean"]})
            log(f"held-out step {step}: mean PSNR {metrics['mean']['psnr']:.2f} dB SSIM {metrics['mean']['ssim']:.4f} {json.dumps(metrics['images'])}")
            stop = args.stop_at_psnr is not None and metrics["mean"]["psnr"] >= args.stop_at_psnr
        if step % args.ckpt_every == 0 or step == args.steps or stop:
            checkpoint()
        if stop:
            log(f"held-out PSNR reached --stop-at-psnr {args.stop_at_psnr}: stopping at step {step}")
            break

    export(averaged(), config, sampler, parent_steps + step, history, commands, args, device)
    return 0


@torch.no_grad()
def export(model: AutoencoderKL, config: VAEConfig, sampler: CropSampler, step: int, history: list, commands: list, args, device) -> None:
    """Set the latent scale (1/std, LDM's scale_by_std), round to fp16, measure, and write the weights."""
    model.eval()
    scale_gen = torch.Generator().manual_seed(args.seed + 2)  # a fixed draw, independent of where training stopped
    sampler.gen, saved_gen = scale_gen, sampler.gen
    latents = [model.encode(sampler.batch(args.batch_size).to(device)).sample(torch.Generator(device=device).manual_seed(i)) for i in range(args.scale_batches)]
    sampler.gen = saved_gen
    std = torch.cat([z.flatten() for z in latents]).float().std().item()
    final_config = config.replace(
        scaling_factor=round(1.0 / std, 5),
        shift_factor=0.0,
        name="vaecli-default",
        description="vaecli's embedded default model: f4, 8 latent channels, trained on CPU by scripts/train_vae.py",
    )
    shipped = AutoencoderKL(final_config).to(device).eval()
    # the metrics describe the shipped fp16 weights, so round them before measuring
    shipped.load_state_dict({k: v.to(torch.float16).to(v.dtype) for k, v in model.state_dict().items()})
    metrics = evaluate(shipped, args.eval_size, device)
    target = args.export or args.out / "vaecli-default.safetensors"
    metadata = {
        "training_command": " && ".join(c.split("  #")[0] for c in commands),
        "training_invocations": metadata_json(commands),
        "held_out_history": metadata_json(history),
        "training_steps": str(step),
        "training_data": metadata_json(data.sources_metadata(data.TRAIN)),
        "held_out_data": metadata_json(data.sources_metadata(data.HELD_OUT)),
        "held_out_metrics": metadata_json(metrics),
        "latent_std": f"{std:.6f}",
        "scaling_factor_method": f"1/std of posterior samples of {args.scale_batches * args.batch_size} training crops of {args.crop}px",
        "git_commit": git_commit(),
        "licence": "weights trained by vaecli from the listed images; see samples/LICENSE.md for the data licences",
    }
    save_weights(shipped, target, metadata=metadata, dtype=torch.float16)
    log(f"exported {target} ({target.stat().st_size / 1e6:.2f} MB): scaling_factor {final_config.scaling_factor} held-out {json.dumps(metrics['mean'])}")


def main(argv=None) -> int:
    return train(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
