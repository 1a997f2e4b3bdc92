"""Provenance and export for scripts/train_vae.py: checkpoints, the commands that built them, the shipped file.

The exported weights are self-describing: config (with the latent scale), every training invocation
from the first run on, the data and its licences, the git commit, the steps and the held-out metrics
(at 512x512 and, when asked, at full size) go into the safetensors metadata.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import default_model_data as data
import default_model_eval as evaluation
import torch
from train_vae_batches import ViewSampler
from train_vae_model import build_config

from vaecli.config import VAEConfig
from vaecli.io.atomic import atomic_path
from vaecli.model import AutoencoderKL
from vaecli.weights.checkpoints import metadata_json, save_weights

REPO = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


def checkpoint_state(step, geometry, model, ema, opt, disc, disc_opt, rngs: dict, history, commands, parent_steps, args) -> dict:
    """Everything `--resume` needs to continue exactly, and the provenance `export` records."""
    return {
        "step": step,
        "geometry": geometry,
        "model": model.state_dict(),
        "ema": ema,
        "opt": opt.state_dict(),
        "disc": disc.state_dict() if disc is not None else None,
        "disc_opt": disc_opt.state_dict() if disc_opt is not None else None,
        **rngs,
        "history": history,
        "commands": commands,
        "parent_steps": parent_steps,
        "args": {k: str(v) for k, v in vars(args).items()},
    }


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


def command_from_args(saved: dict) -> str:
    """Checkpoints written before commands were recorded kept their parsed arguments only."""
    flags = " ".join(f"--{k.replace('_', '-')} {shlex.quote(v)}" for k, v in saved.items() if v not in ("None", "False"))
    return f"python scripts/train_vae.py {flags} (reconstructed from the checkpoint's arguments)"


class Parent(NamedTuple):
    """The run a new one starts from (--init-from)."""

    weights: dict
    commands: list[str]  # its recorded invocations
    steps: int
    config: VAEConfig  # a checkpoint.pt's has no latent scale


def parent_run(path: Path) -> Parent:
    """The run to start from: a checkpoint.pt (its EMA when it kept one) or an exported .safetensors
    file (its recorded `training_invocations` and `training_steps`)."""
    if path.suffix == ".safetensors":
        from vaecli.api import load_vae
        from vaecli.weights.checkpoints import read_metadata

        meta = read_metadata(path)
        parent = load_vae(weights=path, device="cpu", dtype=torch.float32)
        return Parent(parent.state_dict(), json.loads(meta.get("training_invocations", "[]")), int(meta.get("training_steps", 0)), parent.config)
    parent = torch.load(path, map_location="cpu", weights_only=False)  # our own run file
    commands = parent.get("commands") or [command_from_args(parent["args"])]
    return Parent(parent.get("ema") or parent["model"], commands, parent.get("parent_steps", 0) + parent["step"], build_config(parent["geometry"]))


@torch.no_grad()
def latent_std(model: AutoencoderKL, sampler: ViewSampler, batches: int, views: int, seed: int, device) -> float:
    """Std of posterior samples of training crops (each normalised on its own, as one image), a fixed draw."""
    saved_gen, sampler.gen = sampler.gen, torch.Generator().manual_seed(seed)  # independent of where training stopped
    try:
        latents = [model.encode(sampler.batch(views).to(device)).sample(torch.Generator(device=device).manual_seed(i)) for i in range(batches)]
    finally:
        sampler.gen = saved_gen
    return torch.cat([z.flatten() for z in latents]).float().std().item()


@torch.no_grad()
def export(model: AutoencoderKL, config: VAEConfig, sampler: ViewSampler, eval_crops: list, step: int, history: list, commands: list, args, device) -> None:
    """Set the latent scale (1/std, LDM's scale_by_std), round to fp16, measure, and write the weights."""
    model.eval()
    std = latent_std(model, sampler, args.scale_batches, args.batch_size, args.seed + 2, device)
    n_crops = args.scale_batches * args.batch_size * args.crops_per_view
    final_config = config.replace(
        scaling_factor=round(1.0 / std, 5),
        shift_factor=0.0,
        name="vaecli-default",
        description="vaecli's embedded default model: f4, 8 latent channels, trained on CPU by scripts/train_vae.py",
    )
    shipped = AutoencoderKL(final_config).to(device).eval()
    # the metrics describe the shipped fp16 weights, so round them before measuring
    shipped.load_state_dict({k: v.to(torch.float16).to(v.dtype) for k, v in model.state_dict().items()})
    held_out = data.HELD_OUT[: args.eval_images]
    metrics = evaluation.evaluate_512(shipped, eval_crops)
    metadata = {
        "training_command": " && ".join(c.split("  #")[0] for c in commands),
        "training_invocations": metadata_json(commands),
        "held_out_history": metadata_json(history),
        "training_steps": str(step),
        "training_data": metadata_json(data.sources_metadata(data.TRAIN[: args.train_images])),
        "held_out_data": metadata_json(data.sources_metadata(held_out)),
        "held_out_metrics": metadata_json(metrics),
        "latent_std": f"{std:.6f}",
        "scaling_factor_method": f"1/std of posterior samples of {n_crops} training crops of {args.crop}px",
        "git_commit": git_commit(),
        "licence": "weights trained by vaecli from the listed images; see samples/LICENSE.md for the data licences",
    }
    if args.image_pack is not None:  # the images (held-out ones too) were the pack's, downscaled
        metadata["image_pack"] = metadata_json(data.pack_parameters(args.image_pack))
    if args.export_full_min_side is not None:
        full = evaluation.evaluate_full(shipped, args.export_full_min_side, held_out, log=log)
        metadata["held_out_metrics_full_size"] = metadata_json(full)
    target = args.export or args.out / "vaecli-default.safetensors"
    save_weights(shipped, target, metadata=metadata, dtype=torch.float16)
    log(f"exported {target} ({target.stat().st_size / 1e6:.2f} MB): scaling_factor {final_config.scaling_factor} held-out {json.dumps(metrics['mean'])}")
