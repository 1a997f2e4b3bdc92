"""The posterior: KL, NLL, sampling and clamping checked against torch.distributions and float64 math."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vaecli.model.distributions import (
    LOGVAR_MAX,
    LOGVAR_MIN,
    DiagonalGaussianDistribution,
    normal_kl,
)


def _moments(seed: int, shape=(2, 8, 3, 5), dtype=torch.float64) -> torch.Tensor:
    """Encoder-style moments (B, 2C, H, W): mean in the first half, logvar in [-2, 2] in the second."""
    g = torch.Generator().manual_seed(seed)
    b, c, h, w = shape
    mean = torch.randn(b, c // 2, h, w, generator=g, dtype=dtype)
    logvar = 4 * torch.rand(b, c // 2, h, w, generator=g, dtype=dtype) - 2
    return torch.cat([mean, logvar], dim=1)


def _normal(d: DiagonalGaussianDistribution) -> Normal:
    return Normal(d.mean, torch.exp(0.5 * d.logvar))


def test_kl_against_standard_normal():
    d = DiagonalGaussianDistribution(_moments(0))
    mean, logvar = d.mean, d.logvar
    by_hand = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))
    reference = kl_divergence(_normal(d), Normal(torch.zeros_like(mean), torch.ones_like(mean))).sum(dim=(1, 2, 3))
    kl = d.kl()
    assert kl.shape == (2,) and kl.dtype == torch.float64
    assert torch.allclose(kl, by_hand, rtol=1e-12)
    assert torch.allclose(kl, reference, rtol=1e-10)


def test_kl_between_two_posteriors():
    p, q = DiagonalGaussianDistribution(_moments(1)), DiagonalGaussianDistribution(_moments(2))
    by_hand = 0.5 * (
        (p.mean - q.mean) ** 2 / q.logvar.exp() + (p.logvar - q.logvar).exp() - 1 - p.logvar + q.logvar
    ).sum(dim=(1, 2, 3))
    reference = kl_divergence(_normal(p), _normal(q)).sum(dim=(1, 2, 3))
    assert torch.allclose(p.kl(q), by_hand, rtol=1e-12)
    assert torch.allclose(p.kl(q), reference, rtol=1e-10)
    assert torch.all(p.kl(q) > 0) and torch.allclose(p.kl(p), torch.zeros(2, dtype=torch.float64), atol=1e-12)


def test_kl_float32_matches_float64_reference():
    moments = _moments(3)
    got = DiagonalGaussianDistribution(moments.float()).kl()
    want = DiagonalGaussianDistribution(moments).kl()
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), want, rtol=1e-5)


def test_nll_matches_log_prob():
    d = DiagonalGaussianDistribution(_moments(4))
    x = torch.randn(d.mean.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    reference = -_normal(d).log_prob(x).sum(dim=(1, 2, 3))
    assert torch.allclose(d.nll(x), reference, rtol=1e-12)
    assert torch.allclose(d.nll(x, dims=(1,)), -_normal(d).log_prob(x).sum(dim=1), rtol=1e-12)


def test_logvar_is_clamped():
    mean = torch.zeros(1, 2, 1, 1, dtype=torch.float64)
    logvar = torch.tensor([-100.0, 100.0], dtype=torch.float64).reshape(1, 2, 1, 1)
    d = DiagonalGaussianDistribution(torch.cat([mean, logvar], dim=1))
    assert d.logvar.flatten().tolist() == [LOGVAR_MIN, LOGVAR_MAX] == [-30.0, 20.0]
    assert torch.allclose(d.std.flatten(), torch.tensor([math.exp(-15.0), math.exp(10.0)], dtype=torch.float64))
    assert torch.isfinite(d.kl()).all()


def test_deterministic_returns_mean_with_zero_spread():
    moments = _moments(6)
    d = DiagonalGaussianDistribution(moments, deterministic=True)
    assert torch.equal(d.mode(), moments[:, :4])
    assert torch.equal(d.sample(torch.Generator().manual_seed(0)), d.mean)
    assert torch.count_nonzero(d.std) == 0 and torch.count_nonzero(d.var) == 0
    assert torch.equal(d.kl(), torch.zeros(2, dtype=torch.float64))


def test_seeded_sample_is_reproducible():
    d = DiagonalGaussianDistribution(_moments(7, dtype=torch.float32))
    a = d.sample(torch.Generator().manual_seed(42))
    b = d.sample(torch.Generator().manual_seed(42))
    c = d.sample(torch.Generator().manual_seed(43))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, d.mode())
    # The draw is mean + std * eps with eps from the generator, nothing else.
    eps = torch.randn(d.mean.shape, generator=torch.Generator().manual_seed(42))
    assert torch.allclose(a, d.mean + d.std * eps)


def test_sample_statistics():
    b, c, h, w = 1, 3, 256, 256
    mean = torch.tensor([-2.0, 0.0, 3.0]).reshape(1, c, 1, 1).expand(b, c, h, w)
    logvar = torch.log(torch.tensor([0.25, 1.0, 4.0])).reshape(1, c, 1, 1).expand(b, c, h, w)
    d = DiagonalGaussianDistribution(torch.cat([mean, logvar], dim=1))
    s = d.sample(torch.Generator().manual_seed(0)).double()
    # 65536 draws per channel: the standard error of the mean is std/256.
    assert torch.allclose(s.mean(dim=(0, 2, 3)), torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64), atol=0.03)
    assert torch.allclose(s.std(dim=(0, 2, 3)), torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64), rtol=0.02)


@pytest.mark.parametrize(
    "args",
    [
        lambda m, lv: (m, lv, 0.0, 0.0),  # scalar N(0, 1)
        lambda m, lv: (0.5, lv, m, -1.0),  # scalar mean1 and logvar2
        lambda m, lv: (m, lv, m[:1], lv[:, :1]),  # tensor broadcasting
    ],
)
def test_normal_kl_broadcasts_like_torch(args):
    g = torch.Generator().manual_seed(8)
    m = torch.randn(3, 4, generator=g, dtype=torch.float64)
    lv = torch.randn(3, 4, generator=g, dtype=torch.float64)
    mean1, logvar1, mean2, logvar2 = args(m, lv)
    got = normal_kl(mean1, logvar1, mean2, logvar2)

    def as_tensor(v):
        return torch.as_tensor(v, dtype=torch.float64)

    p = Normal(as_tensor(mean1), torch.exp(0.5 * as_tensor(logvar1)))
    q = Normal(as_tensor(mean2), torch.exp(0.5 * as_tensor(logvar2)))
    want = kl_divergence(p, q)
    assert got.shape == want.shape == (3, 4)
    assert torch.allclose(got, want, rtol=1e-12)


def test_normal_kl_needs_a_tensor():
    with pytest.raises(TypeError, match="tensor"):
        normal_kl(0.0, 0.0, 1.0, 0.0)
