"""How long building a config on the meta device takes: real models beside the largest config.LIMITS allows.

Configs come from files others send (latent metadata, self-describing weights), so LIMITS must keep
the largest allowed build well under a second; this measures it beside the real models it must admit.

    python scripts/bench_config_limits.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vaecli.config import LIMITS, VAEConfig, shipped_config
from vaecli.model import AutoencoderKL


def largest_allowed() -> VAEConfig:
    """Every bound at its limit, with attention at every level (the most modules per level)."""
    levels = LIMITS["levels"]
    return VAEConfig(
        ch=LIMITS["ch"],
        ch_mult=(1,) + (LIMITS["channels"] // LIMITS["ch"],) * (levels - 1),
        num_res_blocks=LIMITS["num_res_blocks"],
        z_channels=LIMITS["z_channels"],
        embed_dim=LIMITS["embed_dim"],
        attn_resolutions=tuple(256 >> i for i in range(levels)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    configs = {"sd-vae-ft-mse": shipped_config("sd-vae-ft-mse"), "kl-f32": shipped_config("kl-f32"), "largest allowed": largest_allowed()}
    for name, config in configs.items():
        seconds = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            with torch.device("meta"):
                AutoencoderKL(config)
            seconds.append(time.perf_counter() - t0)
        print(f"{name:16s} best {min(seconds):.3f} s  median {statistics.median(seconds):.3f} s")


if __name__ == "__main__":
    main()
