"""Train vaecli's embedded default model: a small KL autoencoder on freely licensed photographs and art.

    python scripts/train_vae.py --out runs/default --steps 4000 \
        --export vaecli/assets/vaecli-default.safetensors

Loss (latent diffusion's recipe, minus LPIPS): L1 + MSE reconstruction, a tiny KL weight that keeps
the latent a well-behaved Gaussian without costing detail, optionally (`--colour-weight`) the
squared difference of each view's channel means (the colour cast a user sees), and optionally
(`--gan`) a PatchGAN hinge loss whose weight adapts to the ratio of the reconstruction and GAN
gradients at the decoder's last layer. Batches are views of the training images at every size,
each cut into crops that share the view's GroupNorm statistics (train_vae_batches,
train_vae_model.ImagePooledGroupNorm), so that a step sees the statistics of a whole 512-pixel to
6000-pixel image at the cost of small crops; `--stats-margin` takes a large view's statistics from
its crops' interiors, where no zero padding shows (docs/default-model.md, "Size and colour"). A checkpoint is written every `--ckpt-every` steps and
`--resume` continues from it exactly (model, optimisers, step, random generators); `--init-from`
starts from another run's checkpoint or an exported file. At the end the latent scale is set to
1/std of the latents of training crops (LDM's scale_by_std) and the weights are exported as a
self-describing fp16 safetensors file (train_vae_export).

Held-out photographs (scripts/default_model_data.py) are never sampled for training; they are
evaluated every `--eval-every` steps to show progress, and `--stop-at-psnr` may end the run early.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import default_model_data as data  # noqa: E402  (sibling modules of this script)
import default_model_eval as evaluation  # noqa: E402
from train_vae_batches import ViewSampler, image_weight, is_colour  # noqa: E402
from train_vae_export import (  # noqa: E402
    checkpoint_state,
    export,
    log,
    parent_run,
    save_checkpoint,
    this_command,
)
from train_vae_model import (  # noqa: E402
    GEOMETRY_KEYS,
    adaptive_gan_weight,
    build_config,
    colour_loss,
    fold_norm_statistics,
    hinge_d_loss,
    init_group_offsets,
    init_posterior_logvar,
    lr_at,
    pool_group_norms,
    set_stats_margin,
)

from vaecli.model import AutoencoderKL  # noqa: E402
from vaecli.model.discriminator import NLayerDiscriminator  # noqa: E402
from vaecli.runtime.device import pick_device  # noqa: E402

CHECKPOINT = "checkpoint.pt"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/default-vae"), help="run folder: checkpoint and log")
    p.add_argument("--export", type=Path, default=None, help="final weights file (default: OUT/vaecli-default.safetensors)")
    p.add_argument("--steps", type=int, default=4000, help="total optimiser steps (the LR schedule spans them)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="set --steps so that training ends after about this many minutes, from the speed of steps 10-30 (before "
        "the warm-up ends, so the schedule is that of a run given those --steps; the log and the recorded command say which)",
    )
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start from the weights of another run's checkpoint.pt (its EMA when it kept one) or of an exported "
        ".safetensors file, with a fresh optimiser and schedule; same parameter shapes (the geometry given here may "
        "change norm_num_groups); the parent's recorded invocations head this run's",
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
    p.add_argument(
        "--norm-type",
        default=None,
        choices=["group", "affine"],
        help="affine: GroupNorms with fixed statistics (per-channel scale and shift), so that nothing depends on the image's "
        "size; from a GroupNorm parent (--init-from) the parent's average statistics are folded in (default: the parent's; group)",
    )
    # data
    p.add_argument("--batch-size", type=int, default=2, help="views per step (each --crops-per-view crops)")
    p.add_argument("--crop", type=int, default=128, help="crop side in pixels")
    p.add_argument(
        "--crop-sizes",
        type=int,
        nargs="+",
        default=None,
        help="draw each step's crop side from these (uniformly), with --batch-size views of --crop pixels' worth of "
        "pixels per step (at least one view): on a GPU, whole views of 256 to 1280 pixels with their own statistics",
    )
    p.add_argument("--image-pack", type=Path, default=None, help="read the images from this pack (scripts/default_model_pack.py)")
    p.add_argument("--crops-per-view", type=int, default=4, help="crops per view, normalised with the view's pooled statistics")
    p.add_argument("--min-view", type=int, default=256, help="smallest view side: a whole image is shown at least this large")
    p.add_argument("--whole-view-prob", type=float, default=0.5, help="share of views that show the whole (zoomed) image")
    p.add_argument(
        "--stats-margin",
        type=int,
        default=0,
        help="pixels at each crop edge left out of the pooled GroupNorm statistics when every view of the step is at "
        "least --margin-min-view long: the statistics of a large image's interior, where no zero padding shows",
    )
    p.add_argument("--margin-min-view", type=int, default=1024)
    p.add_argument("--photo-weight", type=float, default=3.0, help="sampling weight of colour photographs (art 1, greyscale 0.5)")
    # optimisation
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-final", type=float, default=5e-5, help="cosine decay ends here")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="keep an exponential moving average of the weights with this decay (e.g. 0.999); held-out "
        "metrics and the export then use it (0: off)",
    )
    p.add_argument("--l1-weight", type=float, default=1.0)
    p.add_argument("--mse-weight", type=float, default=1.0)
    p.add_argument("--colour-weight", type=float, default=0.0, help="weight of the squared channel-mean difference per view")
    p.add_argument("--kl-weight", type=float, default=2.5e-7, help="KL (summed over the latent) weight; 1e-6 suits 64-pixel crops")
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
    p.add_argument("--eval-size", type=int, default=512, help="held-out view side")
    p.add_argument("--stop-at-psnr", type=float, default=None, help="end early once mean held-out PSNR reaches this")
    p.add_argument("--scale-batches", type=int, default=16, help="batches of training crops for the latent std")
    p.add_argument(
        "--export-full-min-side",
        type=int,
        default=None,
        help="also measure the held-out images of at least this long side at full size and record it (minutes)",
    )
    p.add_argument("--train-images", type=int, default=None, help="use only the first N training images (tests)")
    p.add_argument("--eval-images", type=int, default=None, help="judge on the first N held-out images only (tests)")
    return p.parse_args(argv)


def training_sampler(args, device) -> ViewSampler:
    chosen = data.TRAIN[: args.train_images]
    images = [data.load_rgb(i.name, args.image_pack) for i in chosen]
    weights = [image_weight(i.kind, is_colour(a), args.photo_weight) for i, a in zip(chosen, images)]
    log(f"{len(images)} training images, {sum(a.shape[0] * a.shape[1] for a in images) / 1e6:.0f} Mpixel")
    return ViewSampler(
        images, weights, args.crop, args.crops_per_view, args.seed, min_view=args.min_view, whole_view_prob=args.whole_view_prob, device=device
    )


def views_and_crop(args, sampler: ViewSampler) -> tuple[int, int]:
    """This step's (views, crop side): --batch-size views of --crop, or, with --crop-sizes, a side drawn
    from them and as many views as keep the step's pixels (one at least)."""
    if not args.crop_sizes:
        return args.batch_size, args.crop
    crop = args.crop_sizes[torch.randint(len(args.crop_sizes), (), generator=sampler.gen).item()]
    return max(1, round(args.batch_size * (args.crop / crop) ** 2)), crop


def steps_for_minutes(args, step: int, started: float, t10: float) -> int:
    """The --steps that end training --minutes after `started`, at the speed of the steps since step 10."""
    per_step = (time.perf_counter() - t10) / (step - 10)
    left = args.minutes * 60 - (time.perf_counter() - started)
    return step + max(0, int(left / per_step))


def train(args) -> int:
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    ckpt_path = args.out / CHECKPOINT
    torch.manual_seed(args.seed)

    resumed = None
    if args.resume:
        if not ckpt_path.is_file():
            print(f"Error: {ckpt_path}: no checkpoint to resume from", file=sys.stderr)
            return 2
        resumed = torch.load(ckpt_path, map_location="cpu", weights_only=False)  # our own file, written below
        geometry = resumed["geometry"]
    parent = parent_run(args.init_from) if resumed is None and args.init_from is not None else None
    if resumed is None:
        if args.norm_type is None:
            args.norm_type = parent.config.norm_type if parent is not None else "group"
        if parent is not None and parent.config.norm_type == "affine" and args.norm_type == "group":
            print(f"Error: {args.init_from}: its norms have fixed statistics (norm_type affine); a GroupNorm model cannot start from it", file=sys.stderr)
            return 2
        geometry = {k: getattr(args, k) for k in GEOMETRY_KEYS}
    config = build_config(geometry)
    args.out.mkdir(parents=True, exist_ok=True)  # once nothing is refused: a refused run leaves no folder

    sampler = training_sampler(args, device)
    model = AutoencoderKL(config).to(device).train()
    step, history = 0, []
    commands: list[str] = []  # every invocation that built this checkpoint, in order (parent runs first)
    parent_steps = 0  # optimiser steps of the runs the weights came from (--init-from)
    if parent is not None:
        weights, commands, parent_steps = parent.weights, parent.commands, parent.steps
        if config.norm_type == "affine" and parent.config.norm_type == "group":
            grouped = AutoencoderKL(config.replace(norm_type="group")).to(device).eval()
            grouped.load_state_dict(weights)
            batches = [sampler.batch(args.batch_size, args.crop).to(device) for _ in range(args.scale_batches)]
            weights = fold_norm_statistics(grouped, batches)
            log(f"folded the GroupNorm statistics of {args.scale_batches * args.batch_size} training crops into affine norms")
        model.load_state_dict(weights)
        log(f"initialised from {args.init_from} ({parent_steps} steps before)")
    elif resumed is None:
        init_posterior_logvar(model, args.init_logvar)
        init_group_offsets(model, args.init_offset)
    pool_group_norms(model, args.crops_per_view)  # the live model normalises each view's crops together
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.99))
    disc = NLayerDiscriminator(input_nc=3, ndf=32, n_layers=3, use_actnorm=True).to(device).train() if args.gan else None
    disc_opt = torch.optim.Adam(disc.parameters(), lr=args.disc_lr, betas=(0.5, 0.9)) if disc is not None else None
    eval_crops = data.held_out_crops(args.eval_size, data.HELD_OUT[: args.eval_images], args.image_pack)  # decoded once
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
        commands, parent_steps = resumed["commands"], resumed.get("parent_steps", 0)
        log(f"resumed from {ckpt_path} at step {step}")

    # the EMA starts from the weights training starts from; a resumed run restores it
    ema = None
    if args.ema > 0:
        ema = resumed["ema"] if resumed is not None and resumed.get("ema") is not None else {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    def averaged() -> AutoencoderKL:
        """The model to evaluate and export (plain GroupNorm): the EMA weights when --ema, else the live ones."""
        copy = AutoencoderKL(config).to(device).eval()
        copy.load_state_dict(ema if ema is not None else model.state_dict())
        return copy

    def checkpoint() -> None:
        rngs = {"sampler_rng": sampler.gen.get_state(), "noise_rng": noise.get_state(), "torch_rng": torch.get_rng_state()}
        state = checkpoint_state(step, geometry, model, ema, opt, disc, disc_opt, rngs, history, commands, parent_steps, args)
        save_checkpoint(ckpt_path, state)

    commands.append(f"{this_command()}  # from step {step}")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model {config.to_json()} | {n_params / 1e6:.2f}M parameters | device {device} | steps {step}->{args.steps}")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    t_last, s_last = time.perf_counter(), step
    started, t10, calibrate = time.perf_counter(), None, args.minutes is not None and step == 0
    if calibrate and args.warmup <= 30:
        print("Error: --minutes needs --warmup above 30 (the steps it times must not depend on --steps)", file=sys.stderr)
        return 2
    while step < args.steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        views, crop = views_and_crop(args, sampler)
        x = sampler.batch(views, crop).to(device)  # (views * crops_per_view, 3, crop, crop)
        large = min(sampler.last_view_sides) >= args.margin_min_view
        set_stats_margin(model, args.stats_margin / crop if large else 0.0)
        use_gan = disc is not None and step >= args.disc_start
        with autocast:
            posterior = model.encode(x)
            xrec = model.decode(posterior.sample(noise))
        xrec = xrec.float()
        rec_loss = args.l1_weight * (x - xrec).abs().mean() + args.mse_weight * (x - xrec).pow(2).mean()
        if args.colour_weight > 0:
            rec_loss = rec_loss + args.colour_weight * colour_loss(x, xrec, args.crops_per_view)
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
        if calibrate and step == 10:
            t10 = time.perf_counter()
        if calibrate and step == 30:
            args.steps, calibrate = steps_for_minutes(args, step, started, t10), False
            commands[-1] = f"{this_command()} --steps {args.steps}  # from step 0 (--steps set by --minutes; without --minutes it reproduces this run)"
            log(f"--minutes {args.minutes}: --steps {args.steps}")

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
            metrics = evaluation.evaluate_512(averaged(), eval_crops)
            history.append({"step": step, **metrics["mean"]})
            log(f"held-out step {step}: {json.dumps(metrics['mean'])} {json.dumps(metrics['images'])}")
            stop = args.stop_at_psnr is not None and metrics["mean"]["psnr"] >= args.stop_at_psnr
        if step % args.ckpt_every == 0 or step == args.steps or stop:
            checkpoint()
        if stop:
            log(f"held-out PSNR reached --stop-at-psnr {args.stop_at_psnr}: stopping at step {step}")
            break

    export(averaged(), config, sampler, eval_crops, parent_steps + step, history, commands, args, device)
    return 0


def main(argv=None) -> int:
    return train(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
