"""Side-by-side Fréchet distance: vaecli's (float64 torch, Cholesky / pivoted Cholesky) against
pytorch-fid's (numpy statistics, scipy sqrtm) on the same 2048-d features, in one process.

Why one run: the machines this is run on are shared; a ratio means something only when both are
timed in the same process. Features are synthetic with the spectrum of real pool3 features (a
power law over four decades) so that the covariances are as ill-conditioned as real ones; the
exact figure is known in closed form only for few images (from the small cross-Gram matrix), so
the accuracy column is reported there.

    python scripts/bench_fid.py --images 50 4096 --repeats 1   # needs pytorch-fid: pip install -e '.[test]'
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from pytorch_fid.fid_score import calculate_frechet_distance

from vaecli.quality.fid import FidStatistics, frechet_distance

DIMS = 2048


def features(n: int, seed: int, shift: float) -> np.ndarray:
    """(n, 2048) features: a random rotation of independent columns whose scales fall as a power law."""
    rng = np.random.default_rng(seed)
    scales = np.logspace(0, -4, DIMS) ** 0.5  # variances over four decades
    basis = np.linalg.qr(np.random.default_rng(0).standard_normal((DIMS, DIMS)))[0]
    return (0.4 + shift + rng.standard_normal((n, DIMS)) * scales) @ basis.T


def exact_fid(a: np.ndarray, b: np.ndarray) -> float | None:
    """FID from the (n_a, n_b) cross-Gram matrix: exact in float64, affordable for few images."""
    if max(len(a), len(b)) > 512:
        return None
    ca, cb = a - a.mean(0), b - b.mean(0)
    cross = ca @ cb.T / np.sqrt((len(a) - 1) * (len(b) - 1))
    diff = a.mean(0) - b.mean(0)
    traces = (ca**2).sum() / (len(a) - 1) + (cb**2).sum() / (len(b) - 1)
    return float(diff @ diff + traces - 2 * np.linalg.svd(cross, compute_uv=False).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[50, 4096])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}")
    print(f"{'images':>7} {'vaecli s':>9} {'pytorch-fid s':>14} {'vaecli':>20} {'pytorch-fid':>20} {'exact':>20}")
    for n in args.images:
        a, b = features(n, 1, 0.0), features(n, 2, 0.01)
        ours_t, theirs_t = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            sa, sb = FidStatistics(), FidStatistics()
            for stats, feats in ((sa, a), (sb, b)):
                for chunk in np.array_split(feats, max(1, n // 256)):
                    stats.add_features(torch.from_numpy(chunk))
            ours = frechet_distance(sa, sb)
            ours_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            theirs = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
            theirs_t.append(time.perf_counter() - t)
        exact = exact_fid(a, b)
        print(f"{n:>7} {min(ours_t):>9.2f} {min(theirs_t):>14.2f} {ours:>20.12f} {float(np.real(theirs)):>20.12f} {exact if exact is not None else float('nan'):>20.12f}")


if __name__ == "__main__":
    main()
