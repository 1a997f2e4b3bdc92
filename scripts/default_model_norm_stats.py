"""Find which GroupNorms make a GroupNorm model's colour depend on the image's size.

    git show a178547:vaecli/assets/vaecli-default.safetensors > runs/groupnorm-default.safetensors
    python scripts/default_model_norm_stats.py --weights runs/groupnorm-default.safetensors \
        --only analogpattern_by_Peter_Nerlich --side 1024 [--parts]

`--weights`: a model with GroupNorms, such as the default model before its statistics were fixed
(the commit above; the shipped one has no GroupNorm left to diagnose). The same held-out
photograph is resized (Lanczos) to a long side of `--reference` (256: where that model's colour is
right) and of `--side`. The large one is then reconstructed again with
chosen GroupNorms normalising by the small one's statistics (per group: mean and variance, or only
one of them) instead of its own. Where borrowing the small image's statistics removes the colour
shift, those norms are where the size enters (docs/default-model.md, "Size and colour"). Each
line: which norms borrowed what, and PSNR, SSIM and colour shift as scripts/default_model_eval.py
measures them. A diagnosis tool: the model it measures is unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import default_model_data as data  # noqa: E402  (sibling modules of this script)
import default_model_eval as evaluation  # noqa: E402

from vaecli.api import load_vae  # noqa: E402


class BorrowedStatistics:
    """Replaces the forward of each GroupNorm of a model: record each norm's (mean, var) per group, or
    normalise the chosen norms with the recorded ones (`what`: "both", "mean" or "var")."""

    def __init__(self, model: nn.Module):
        self.norms = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.GroupNorm)]
        self.recorded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.mode, self.chosen, self.what = "own", set(), "both"
        for i, (_, m) in enumerate(self.norms):
            m.forward = self._forward(i, m)

    def _forward(self, i: int, m: nn.GroupNorm):
        def forward(x: torch.Tensor) -> torch.Tensor:
            b, c, h, w = x.shape
            grouped = x.reshape(b, m.num_groups, -1)  # (B, G, C/G*H*W)
            var, mean = torch.var_mean(grouped, dim=-1, correction=0)  # (B, G)
            if self.mode == "record":
                self.recorded[i] = (mean, var)
            elif self.mode == "borrow" and i in self.chosen:
                if self.what in ("both", "mean"):
                    mean = self.recorded[i][0]
                if self.what in ("both", "var"):
                    var = self.recorded[i][1]
            y = (grouped - mean[..., None]) * torch.rsqrt(var[..., None] + m.eps)
            return y.reshape(b, c, h, w) * m.weight.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1)

        return forward

    def indices(self, prefix: str) -> set[int]:
        return {i for i, (name, _) in enumerate(self.norms) if name.startswith(prefix)}

    def parts(self) -> dict[str, set[int]]:
        """The decoder's norms by stage: mid blocks, each up level, norm_out."""
        out: dict[str, set[int]] = {}
        for i, (name, _) in enumerate(self.norms):
            if name.startswith("decoder."):
                parts = name.split(".")
                out.setdefault(".".join(parts[:3]) if parts[1] in ("mid", "up") else name, set()).add(i)
        return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", required=True, help="a held-out image, by its reported name")
    p.add_argument("--side", type=int, default=1024)
    p.add_argument("--reference", type=int, default=256)
    p.add_argument("--parts", action="store_true", help="borrow per decoder stage instead of encoder / decoder / all")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--weights", type=Path, required=True, help="the GroupNorm model to diagnose (see above)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    vae = load_vae(weights=args.weights, device="cpu", dtype=torch.float32)
    stats = BorrowedStatistics(vae)
    if not stats.norms:
        p.error(f"{args.weights}: no GroupNorm to diagnose (norm_type {vae.config.norm_type})")
    photo = data.load_rgb(next(i.name for i in data.HELD_OUT if i.short == args.only))
    small, big = data.resize_long_side(photo, args.reference), data.resize_long_side(photo, args.side)

    def run(label: str, view: np.ndarray) -> None:
        print(args.only, view.shape[1], "x", view.shape[0], label, evaluation.image_metrics(view, evaluation.reconstruct(vae, view)), flush=True)

    run("own statistics", small)
    run("own statistics", big)
    stats.mode = "record"
    evaluation.reconstruct(vae, small)
    everything = set(range(len(stats.norms)))
    if args.parts:
        plan = [(f"{part} {what}", chosen, what) for part, chosen in stats.parts().items() for what in ("both", "var")]
    else:
        plan = [("all both", everything, "both"), ("all var", everything, "var"), ("all mean", everything, "mean")]
        plan += [("encoder both", stats.indices("encoder."), "both"), ("decoder both", stats.indices("decoder."), "both")]
    stats.mode = "borrow"
    for label, stats.chosen, stats.what in plan:
        run(f"{label} from {args.reference}", big)
    return 0


if __name__ == "__main__":
    sys.exit(main())
