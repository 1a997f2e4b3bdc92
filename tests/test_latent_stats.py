"""Streaming latent statistics (float64) and the normaliser fitted from them: ActNorm (seed 001), with
whitening a Glow LU 1x1 convolution (seed 003); checked against float64 references and known Gaussians."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaecli.errors import ConfigError
from vaecli.model.flows import ActNorm
from vaecli.stats import normalizer_file
from vaecli.stats.moments import LatentMoments
from vaecli.stats.normalizer import LatentNormalizer
from vaecli.stats.normalizer_file import NORMALIZER_FORMAT

C = 8


def _gaussian_latents(seed: int, batches: int, shape=(4, C, 16, 24)):
    """Latents of a known law: mean MU, covariance A A^T (correlated channels), in float32 batches."""
    g = torch.Generator().manual_seed(123)  # the law itself is fixed
    mix = torch.randn(C, C, generator=g, dtype=torch.float64) * 0.5 + torch.eye(C, dtype=torch.float64) * 2
    mu = torch.linspace(-3, 5, C, dtype=torch.float64)
    draws = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        white = torch.randn(shape, generator=draws, dtype=torch.float64)
        out.append((torch.einsum("oc,bchw->bohw", mix, white) + mu.view(1, -1, 1, 1)).float())  # (B, C, H, W)
    return out, mu, mix @ mix.T


def _moments(batches) -> LatentMoments:
    m = LatentMoments.empty(C)
    for z in batches:
        m.update(z)
    return m


def test_streaming_moments_equal_float64_over_everything_at_once():
    """Batches of different sizes and a merge of two halves give numpy's float64 moments of the whole."""
    batches, *_ = _gaussian_latents(0, 6)
    batches[2] = batches[2][:1, :, :5, :7]  # a small, odd-sized one
    first, second = _moments(batches[:4]), _moments(batches[4:])
    first.merge(second)
    cells = np.concatenate([z.double().numpy().transpose(1, 0, 2, 3).reshape(C, -1) for z in batches], axis=1)  # (C, N)
    assert first.count == cells.shape[1]
    np.testing.assert_allclose(first.mean.numpy(), cells.mean(axis=1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(first.covariance.numpy(), np.cov(cells), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(first.global_std, cells.std(ddof=1), rtol=1e-10)
    assert first.global_mean == pytest.approx(cells.mean(), abs=1e-12)
    np.testing.assert_array_equal(first.minimum.numpy(), cells.min(axis=1))


def test_a_far_off_mean_keeps_full_precision():
    """Values around 1e4 with spread 1e-2: a sum-of-squares accumulator would lose every digit of the variance."""
    g = torch.Generator().manual_seed(0)
    m = LatentMoments.empty(1)
    for _ in range(50):
        m.update((1e4 + 1e-2 * torch.randn(8, 1, 32, 32, generator=g, dtype=torch.float64)))
    assert m.std.item() == pytest.approx(1e-2, rel=0.01)


def test_known_gaussian_recovered_within_one_percent():
    batches, mu, cov = _gaussian_latents(1, 40)
    m = _moments(batches)
    assert (m.mean - mu).abs().max() <= 0.01 * mu.abs().max()
    assert torch.allclose(m.std, cov.diagonal().sqrt(), rtol=0.01)
    pooled_var = cov.diagonal().mean() + ((mu - mu.mean()) ** 2).mean()  # the law of all values, channels pooled
    assert m.global_std == pytest.approx(math.sqrt(pooled_var), rel=0.01)
    factors = m.suggested_factors()
    assert factors["sd"] == {"scaling_factor": pytest.approx(1 / math.sqrt(pooled_var), rel=0.01), "shift_factor": 0.0}
    assert factors["sd3_flux"]["shift_factor"] == pytest.approx(float(mu.mean()), abs=0.01 * float(mu.abs().max()))


def test_actnorm_is_the_seed_initialised_on_all_the_data():
    """Fitted from streaming moments = the seed's ActNorm.initialize on the whole data set in one batch."""
    batches, *_ = _gaussian_latents(2, 5)
    fitted = LatentNormalizer.fit(_moments(batches))
    seed = ActNorm(C).double()
    seed.initialize(torch.cat(batches).double())
    assert torch.allclose(fitted.actnorm.loc, seed.loc, rtol=0, atol=1e-10)
    assert torch.allclose(fitted.actnorm.scale, seed.scale, rtol=1e-10)


@pytest.mark.parametrize("whiten", [False, True])
def test_normalised_latents_are_standard_and_invert_exactly(whiten):
    fit_on, *_ = _gaussian_latents(3, 20, (16, C, 32, 32))  # 327,680 cells: sampling noise ~0.2%
    fresh, *_ = _gaussian_latents(4, 20, (16, C, 32, 32))
    norm = LatentNormalizer.fit(_moments(fit_on), whiten=whiten)
    out = _moments([norm(z) for z in fresh])
    assert out.mean.abs().max() < 0.02
    if whiten:  # identity covariance within 2%
        assert (out.covariance - torch.eye(C, dtype=torch.float64)).abs().max() < 0.02
    else:
        assert torch.allclose(out.std, torch.ones(C, dtype=torch.float64), rtol=0.02)
        assert (out.covariance - torch.eye(C, dtype=torch.float64)).abs().max() > 0.1  # correlations stay
    z = fresh[0]
    back = norm.inverse(norm(z))
    assert back.dtype == z.dtype and (back - z).abs().max() <= 1e-5 * z.abs().max()


def test_log_determinant_is_that_of_the_whole_linear_map():
    fit_on, *_ = _gaussian_latents(5, 10)
    norm = LatentNormalizer.fit(_moments(fit_on), whiten=True)
    eye = torch.eye(C, dtype=torch.float64).view(C, C, 1, 1)  # C one-cell latents, one per basis vector
    zero = norm.inverse(torch.zeros(1, C, 1, 1, dtype=torch.float64))  # the point the map sends to 0
    matrix = (norm(eye + zero) - norm(zero)).view(C, C).T  # column j: the map's action on basis vector j
    assert norm.logdet_per_cell() == pytest.approx(torch.linalg.slogdet(matrix)[1].item(), rel=1e-9)
    _, logdet = norm.forward_with_logdet(torch.zeros(2, C, 3, 5))
    assert torch.allclose(logdet, torch.full((2,), 15 * norm.logdet_per_cell(), dtype=torch.float64))


@pytest.mark.parametrize("whiten", [False, True])
def test_file_round_trip_is_bit_exact(tmp_path, whiten):
    fit_on, *_ = _gaussian_latents(6, 10)
    norm = LatentNormalizer.fit(_moments(fit_on), whiten=whiten, metadata={"model": "sd-vae-ft-mse", "data": "photos/"})
    path = tmp_path / "norm.safetensors"
    normalizer_file.save(norm, path)
    loaded = normalizer_file.load(path)
    assert loaded.whiten == whiten and loaded.metadata == {"count": str(10 * 4 * 16 * 24), "model": "sd-vae-ft-mse", "data": "photos/"}
    z = fit_on[0]
    assert torch.equal(loaded(z), norm(z)) and torch.equal(loaded.inverse(norm(z)), norm.inverse(norm(z)))
    assert torch.equal(normalizer_file.from_text(normalizer_file.to_text(norm))(z), norm(z))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == NORMALIZER_FORMAT and meta["whiten"] == str(whiten).lower()
    assert float(meta["logdet_per_cell"]) == norm.logdet_per_cell()
    assert path.stat().st_size < 8 * (C * C + 4 * C) + 1024  # packed: about C^2 + 4C float64 numbers


def _tampered(key: str, change) -> bytes:
    from safetensors.torch import load, save

    fit_on, *_ = _gaussian_latents(7, 4)
    tensors = load(normalizer_file.to_bytes(LatentNormalizer.fit(_moments(fit_on), whiten=True)))
    tensors[key] = change(tensors[key])
    return save(tensors, metadata={"format": NORMALIZER_FORMAT})


@pytest.mark.parametrize(
    "key, change, cause",
    [
        ("actnorm.scale", torch.zeros_like, "zero"),
        ("actnorm.loc", lambda t: torch.full_like(t, math.nan), "NaN"),
        ("actnorm.scale", lambda t: t * 1e-35, "out of range"),
        ("invconv.lu", lambda t: t + 1e39, "beyond float32's range"),
        ("invconv.perm", torch.zeros_like, "malformed"),
        ("invconv.sign_s", lambda t: torch.full_like(t, 0.5), "malformed"),
        ("invconv.lu", lambda t: t + torch.eye(C, dtype=t.dtype), "malformed"),
        ("invconv.lu", lambda t: torch.zeros(C + 1, C + 1, dtype=t.dtype), "expected"),
        ("invconv.log_s", lambda t: t.float(), "expected"),
        ("invconv.log_s", lambda t: t + 100, "out of range"),
    ],
)
def test_tampered_normalisers_are_refused(key, change, cause):
    with pytest.raises(ConfigError, match=cause):
        normalizer_file.from_bytes(_tampered(key, change))


def test_other_files_are_refused():
    with pytest.raises(ConfigError, match="not a normaliser"):
        normalizer_file.from_bytes(b"\x00" * 64)
    from safetensors.torch import save

    with pytest.raises(ConfigError, match="format"):
        normalizer_file.from_bytes(save({"x": torch.zeros(3)}))
    with pytest.raises(ConfigError, match="tensors"):
        normalizer_file.from_bytes(save({"x": torch.zeros(3)}, metadata={"format": NORMALIZER_FORMAT}))
    with pytest.raises(ConfigError, match="base64"):
        normalizer_file.from_text("not base64!")


def test_whitening_dependent_channels_is_refused():
    batches, *_ = _gaussian_latents(8, 4)
    dependent = [torch.cat([z[:, :-1], z[:, :1] * 2 - z[:, 1:2]], dim=1) for z in batches]  # last = 2 c0 - c1
    with pytest.raises(ValueError, match="linearly dependent"):
        LatentNormalizer.fit(_moments(dependent), whiten=True)
