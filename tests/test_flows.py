"""ActNorm and Invertible1x1Conv: init, invertibility, and log-determinants checked against dense math."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from vaecli.model.flows import ActNorm, Invertible1x1Conv


def _skewed(shape, seed=0) -> torch.Tensor:
    """Random data whose channels have very different means and spreads (dim 1 is channels)."""
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    view = (1, c) + (1,) * (len(shape) - 2)
    scale = torch.linspace(0.2, 5.0, c).reshape(view)
    shift = torch.linspace(-3.0, 4.0, c).reshape(view)
    return torch.randn(shape, generator=g) * scale + shift


def _dense_logdet(f, x: torch.Tensor) -> torch.Tensor:
    """log|det J| of f at x from the full Jacobian, in float64."""
    x = x.double()
    jac = jacobian(f, x).reshape(x.numel(), x.numel())  # (N, N), N = B*C*H*W
    sign, logabs = torch.linalg.slogdet(jac)
    assert sign != 0
    return logabs


# ---------------------------------------------------------------------------------------------- ActNorm


def test_actnorm_init_standardises_each_channel():
    norm = ActNorm(5)
    x = _skewed((8, 5, 6, 6))
    y = norm(x)
    assert norm.initialized.item() == 1
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(5), atol=1e-5)
    assert torch.allclose(y.std(dim=(0, 2, 3)), torch.ones(5), atol=1e-4)
    assert torch.allclose(norm.loc.flatten(), -x.mean(dim=(0, 2, 3)), atol=1e-5)


def test_actnorm_round_trip():
    norm = ActNorm(4)
    x = _skewed((3, 4, 5, 7))
    y = norm(x)
    assert not torch.allclose(y, x)
    assert torch.allclose(norm(y, reverse=True), x, atol=1e-5)
    assert torch.allclose(norm.reverse(y), x, atol=1e-5)


def test_actnorm_logdet_equals_dense_jacobian():
    norm = ActNorm(3, logdet=True).double()
    x = _skewed((1, 3, 2, 2)).double()
    _, logdet = norm(x)  # initialises
    assert logdet.shape == (1,)
    dense = _dense_logdet(lambda v: norm(v)[0], x)
    assert torch.allclose(logdet[0], dense, atol=1e-9)
    # H*W*sum(log|scale|) does not depend on the batch; one entry per sample.
    _, batch_logdet = norm(_skewed((4, 3, 2, 2), seed=1).double())
    assert batch_logdet.shape == (4,) and torch.allclose(batch_logdet, dense.expand(4))


def test_actnorm_2d_input():
    norm = ActNorm(6, logdet=True)
    x = _skewed((64, 6))
    y, logdet = norm(x)
    assert y.shape == (64, 6) and logdet.shape == (64,)
    assert torch.allclose(y.mean(dim=0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(y.std(dim=0), torch.ones(6), atol=1e-4)
    assert torch.allclose(norm(y, reverse=True), x, atol=1e-4)
    assert torch.allclose(logdet, torch.log(norm.scale.abs()).sum().expand(64))


def test_actnorm_initialises_only_once():
    norm = ActNorm(3)
    norm(_skewed((4, 3, 4, 4), seed=0))
    loc, scale = norm.loc.detach().clone(), norm.scale.detach().clone()
    other = _skewed((4, 3, 4, 4), seed=1) * 10 + 7
    norm(other)
    assert torch.equal(norm.loc, loc) and torch.equal(norm.scale, scale)


def test_actnorm_state_dict_keeps_initialisation():
    norm = ActNorm(3)
    norm(_skewed((4, 3, 4, 4)))
    state = norm.state_dict()
    assert set(state) == {"loc", "scale", "initialized"}
    assert state["initialized"].dtype == torch.uint8
    fresh = ActNorm(3)
    fresh.load_state_dict(state)
    new_data = _skewed((4, 3, 4, 4), seed=2) * 3
    assert torch.equal(fresh(new_data), norm(new_data))
    assert torch.equal(fresh.loc, norm.loc) and torch.equal(fresh.scale, norm.scale)


def test_actnorm_reverse_before_init():
    y = _skewed((4, 3, 4, 4))
    with pytest.raises(RuntimeError, match="initialised"):
        ActNorm(3).reverse(y)
    norm = ActNorm(3, allow_reverse_init=True)
    x = norm(y, reverse=True)
    assert norm.initialized.item() == 1
    assert torch.allclose(norm(x), y, atol=1e-4)


def test_actnorm_rejects_non_affine():
    with pytest.raises(AssertionError, match="affine"):
        ActNorm(3, affine=False)


# ------------------------------------------------------------------------------------ Invertible1x1Conv


def _check_conv(conv: Invertible1x1Conv, x: torch.Tensor) -> None:
    """logdet == H*W*slogdet(W) in float64, W is what the conv applies, and the round trip is exact."""
    height, width = x.shape[2:]
    y, logdet = conv(x)
    w = conv.weight().detach().double()
    sign, logabs = torch.linalg.slogdet(w)
    assert sign != 0
    assert logdet.shape == (x.shape[0],)
    assert torch.allclose(logdet.double(), (height * width * logabs).expand(x.shape[0]), rtol=1e-5, atol=1e-4)
    expected = torch.einsum("oc,bchw->bohw", w, x.double())
    assert torch.allclose(y.double(), expected, atol=1e-5)
    back, inv_logdet = conv(y, reverse=True)
    assert torch.allclose(inv_logdet, -logdet)
    assert torch.allclose(back, x, atol=1e-5)


def test_invertible_conv_init_is_a_rotation():
    conv = Invertible1x1Conv(6, generator=torch.Generator().manual_seed(0))
    w = conv.weight().detach().double()
    assert torch.allclose(w @ w.T, torch.eye(6, dtype=torch.float64), atol=1e-6)
    assert set(dict(conv.named_parameters())) == {"L", "U", "log_s"}
    assert set(dict(conv.named_buffers())) == {"P", "sign_s", "lower_mask", "eye"}


def test_invertible_conv_logdet_and_round_trip():
    torch.manual_seed(0)
    conv = Invertible1x1Conv(5)
    with torch.no_grad():  # move off the rotation so the logdet is not trivially 0
        conv.log_s.copy_(torch.tensor([0.5, -0.3, 0.2, 0.1, -0.7]))
        conv.L.add_(0.3 * torch.randn(5, 5))
        conv.U.add_(0.3 * torch.randn(5, 5))
    x = torch.randn(3, 5, 4, 6)
    _check_conv(conv, x)
    assert abs(conv(x)[1][0].item() - 24 * (-0.2)) < 1e-4


def test_invertible_conv_logdet_equals_dense_jacobian():
    conv = Invertible1x1Conv(3, generator=torch.Generator().manual_seed(1)).double()
    with torch.no_grad():
        conv.log_s.copy_(torch.tensor([0.4, -0.1, 0.25], dtype=torch.float64))
    x = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    dense = _dense_logdet(lambda v: conv(v)[0], x)
    assert torch.allclose(conv(x)[1][0], dense, atol=1e-9)


def test_invertible_conv_stays_invertible_after_training():
    torch.manual_seed(0)
    conv = Invertible1x1Conv(4)
    data = torch.randn(16, 4, 4, 4) * torch.tensor([3.0, 0.5, 2.0, 1.0]).reshape(1, 4, 1, 1)
    opt = torch.optim.Adam(conv.parameters(), lr=1e-2)
    before = conv.weight().detach().clone()
    for _ in range(100):
        y, _ = conv(data)
        loss = ((y.pow(2).sum(dim=1) - 4.0) ** 2).mean()  # arbitrary: just moves every parameter
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.allclose(conv.weight().detach(), before, atol=1e-2)
    assert conv.log_s.detach().abs().sum() > 1e-2  # no longer volume-preserving
    _check_conv(conv, data)


def test_invertible_conv_ignores_masked_entries():
    """Only the strict triangles of L and U are used: junk elsewhere must not change W."""
    conv = Invertible1x1Conv(4, generator=torch.Generator().manual_seed(2))
    before = conv.weight().detach().clone()
    with torch.no_grad():
        conv.L.add_(torch.triu(torch.full((4, 4), 9.0)))  # diagonal and upper half of L
        conv.U.add_(torch.tril(torch.full((4, 4), 9.0)))  # diagonal and lower half of U
    assert torch.equal(conv.weight().detach(), before)
