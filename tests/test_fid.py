"""rFID: the FID Inception against pytorch-fid's (same random weights loaded into both, no
download), streamed statistics against numpy, the Fréchet distance against pytorch-fid's scipy
sqrtm and against closed forms, and the pinned weights file's key layout, hash and cache."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from tests.fid_helpers import photos, random_inception, to_tensor
from vaecli.errors import CheckpointError, VaecliError
from vaecli.quality import inception as inception_mod
from vaecli.quality.fid import (
    FEW_IMAGES,
    FidStatistics,
    frechet_distance,
    sample_note,
    trace_sqrt_product,
)
from vaecli.quality.inception import FEATURE_DIMS, FIDInceptionV3, load_inception
from vaecli.weights import registry

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"


@pytest.fixture(scope="module")
def pytorch_fid():
    return pytest.importorskip("pytorch_fid.inception", reason="pytorch-fid (a test dependency) is not installed")


@pytest.fixture(scope="module")
def network(pytorch_fid) -> FIDInceptionV3:
    return random_inception()


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """Six crops of real photographs at odd sizes (one over 1024 px), and blurred copies as the
    "reconstructions", saved as PNG files as a roundtrip writes them."""
    root = tmp_path_factory.mktemp("fid")
    inputs, recons = root / "inputs", root / "recons"
    inputs.mkdir(), recons.mkdir()
    for name, photo in photos().items():
        h, w = photo.shape[:2]
        ch, cw = (1031, 1027) if h > 1100 else (h - h % 8 - 3, w - w % 8 - 5)  # odd sizes; retina over 1024
        crop = Image.fromarray(photo[(h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 : (w - cw) // 2 + cw, :3])
        crop.save(inputs / f"{name}.png")
        crop.filter(ImageFilter.GaussianBlur(2.0)).save(recons / f"{name}.png")
    return inputs, recons


@pytest.fixture(scope="module")
def pytorch_fid_run(pytorch_fid, network, folders) -> tuple[float, list[np.ndarray]]:
    """pytorch-fid's figure for the two folders, its whole pipeline (file loading, its InceptionV3
    with the FID blocks, numpy statistics, scipy sqrtm), with our random weights given to its own
    loader, which loads them strictly into torchvision's modules; and the activations it saw."""
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    seen = []

    def recording(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    original = fid_score.get_activations
    with mock.patch.object(pytorch_fid, "load_state_dict_from_url", lambda *a, **k: network.state_dict()), mock.patch.object(
        fid_score, "get_activations", recording
    ):
        value = fid_score.calculate_fid_given_paths([str(f) for f in folders], batch_size=1, device="cpu", dims=FEATURE_DIMS, num_workers=0)
    return float(value), seen


def _folder_statistics(folder: Path, network: FIDInceptionV3) -> tuple[FidStatistics, np.ndarray]:
    """Our statistics of a folder's images, streamed one file at a time; and the features."""
    seen = []
    stats = FidStatistics(lambda x: seen.append(network(x)) or seen[-1])
    for path in sorted(folder.glob("*.png")):
        stats.update(to_tensor(np.asarray(Image.open(path).convert("RGB"))))
    return stats, torch.cat(seen).numpy()


@pytest.fixture(scope="module")
def ours(network, folders) -> list[tuple[FidStatistics, np.ndarray]]:
    return [_folder_statistics(f, network) for f in folders]


def test_features_equal_pytorch_fids_at_odd_and_large_sizes(ours, pytorch_fid_run):
    for (_, features), theirs in zip(ours, pytorch_fid_run[1]):
        assert features.shape == theirs.shape == (6, FEATURE_DIMS)
        np.testing.assert_allclose(features, theirs, rtol=1e-5, atol=1e-6)
        assert (features.std(axis=0) > 1e-3).mean() > 0.9  # features that vary between photographs


def _exact_fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID of two small feature sets in float64 without any 2048x2048 root: with C the centred
    features (n, D), S = C^T C / (n - 1), and the non-zero eigenvalues of S_a S_b are the squared
    singular values of C_a C_b^T / (n - 1), a matrix of n_a x n_b."""
    ca, cb = features_a - features_a.mean(0), features_b - features_b.mean(0)
    cross = ca @ cb.T / np.sqrt((len(ca) - 1) * (len(cb) - 1))  # (n_a, n_b)
    traces = (ca**2).sum() / (len(ca) - 1) + (cb**2).sum() / (len(cb) - 1)
    diff = features_a.mean(0) - features_b.mean(0)
    return float(diff @ diff + traces - 2 * np.linalg.svd(cross, compute_uv=False).sum())


def test_rfid_equals_pytorch_fid_and_the_exact_value_on_two_folders(ours, pytorch_fid_run):
    value = frechet_distance(ours[0][0], ours[1][0])
    theirs, (features_a, features_b) = pytorch_fid_run
    assert 1.0 < theirs < 1000.0  # blurring moved the features; a figure of the real network's range
    assert abs(value - theirs) < 1e-3, (value, theirs)
    exact = _exact_fid(features_a, features_b)
    assert abs(value - exact) < 1e-9 * exact, (value, exact)
    print(f"rFID ours {value!r}, pytorch-fid {theirs!r}, exact {exact!r}")


def test_fid_of_a_folder_with_itself_is_zero_however_it_was_streamed(ours):
    stats, features = ours[0]
    whole = FidStatistics()
    whole.add_features(torch.from_numpy(features).double()[[5, 3, 1, 0, 2, 4]])  # another order, one batch
    assert abs(frechet_distance(stats, whole)) < 1e-6


def test_streamed_statistics_equal_numpy_mean_and_cov():
    rng = np.random.default_rng(0)
    # a large common offset against a small spread: what naive sums of squares get wrong
    features = 1e3 + rng.standard_normal((300, 64)) * rng.uniform(0.01, 1.0, 64)
    stats = FidStatistics(dims=64)
    for chunk in np.array_split(features, [1, 2, 50, 199]):
        stats.add_features(torch.from_numpy(chunk))
    assert stats.count == 300
    np.testing.assert_allclose(stats.mean.numpy(), np.mean(features, axis=0), rtol=1e-14)
    np.testing.assert_allclose(stats.covariance.numpy(), np.cov(features, rowvar=False), rtol=1e-9, atol=1e-15)


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))[0]


@pytest.mark.parametrize("zeros_a, zeros_b", [(0, 0), (40, 0), (0, 40), (50, 20)])
def test_trace_sqrt_product_closed_form_with_singular_covariances(zeros_a, zeros_b):
    """Covariances with a shared eigenbasis: tr sqrtm(A B) = sum sqrt(a_i b_i), exactly known,
    including the rank-deficient covariances of fewer images than features."""
    d, q = 64, _orthogonal(64, 0)
    a = torch.logspace(1, -5, d, dtype=torch.float64)  # condition 1e6, as real features have
    b = a.flip(0) * 1.3
    a[d - zeros_a :], b[:zeros_b] = 0, 0
    cov_a, cov_b = (q * a) @ q.T, (q * b) @ q.T
    torch.testing.assert_close(trace_sqrt_product(cov_a, cov_b), (a * b).sqrt().sum(), rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(trace_sqrt_product(cov_a, cov_a), a.sum(), rtol=1e-10, atol=1e-9)


def test_trace_sqrt_product_equals_scipy_sqrtm_for_full_rank_covariances():
    linalg = pytest.importorskip("scipy.linalg")
    d = 96
    cov_a = (_orthogonal(d, 1) * torch.logspace(1, -4, d, dtype=torch.float64)) @ _orthogonal(d, 1).T
    cov_b = (_orthogonal(d, 2) * torch.logspace(0, -3, d, dtype=torch.float64)) @ _orthogonal(d, 2).T
    want = np.trace(linalg.sqrtm(cov_a.numpy() @ cov_b.numpy())).real
    assert abs(trace_sqrt_product(cov_a, cov_b).item() - want) < 1e-9 * want


def test_statistics_refuse_too_few_images_and_wrong_shapes():
    stats = FidStatistics(dims=8)
    with pytest.raises(VaecliError, match="at least 1 image, got 0"):
        _ = stats.mean
    stats.add_features(torch.zeros(1, 8))
    with pytest.raises(VaecliError, match="at least 2 images, got 1"):
        frechet_distance(stats, stats)
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        stats.add_features(torch.zeros(3, 9))
    with pytest.raises(ValueError, match="network"):
        FidStatistics().update(torch.zeros(1, 3, 8, 8))


def test_sample_note_names_the_count_and_the_bias():
    assert sample_note(12).startswith("rFID over 12 images; biased")
    assert sample_note(1).startswith("rFID over 1 image;")
    assert sample_note(FEW_IMAGES) == f"rFID over {FEW_IMAGES} images"


# --- the weights file -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def published_layout(pytorch_fid, network, tmp_path_factory) -> Path:
    """A file laid out as pytorch-fid's weights: the state dict of torchvision's Inception3 as
    pytorch-fid patches it (1008-way fc, no aux logits), here holding our random weights."""
    with mock.patch.object(pytorch_fid, "load_state_dict_from_url", lambda *a, **k: network.state_dict()):
        torchvision_model = pytorch_fid.fid_inception_v3()
    path = tmp_path_factory.mktemp("weights") / WEIGHTS_FILE
    torch.save(torchvision_model.state_dict(), path)
    return path


def test_the_published_key_layout_loads_strictly(published_layout, network):
    state = torch.load(published_layout, weights_only=True)
    assert state["fc.weight"].shape == (1008, 2048) and not any(k.startswith("AuxLogits") for k in state)
    loaded = FIDInceptionV3.from_file(published_layout)
    for key, value in network.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # a file as old torch wrote them: no BatchNorm num_batches_tracked (before 0.4.1), the legacy
    # (pre-1.6, non-zip) container; weights_only reads it, and it loads as strictly
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, published_layout.with_name("old.pth"), _use_new_zipfile_serialization=False)
    loaded = FIDInceptionV3.from_file(published_layout.with_name("old.pth"))
    assert torch.equal(loaded.Mixed_7c.branch_pool.bn.running_var, network.Mixed_7c.branch_pool.bn.running_var)


def test_a_foreign_file_is_refused_in_one_line_naming_it(published_layout, tmp_path):
    state = torch.load(published_layout, weights_only=True)
    for name, bad in (
        ("missing.pth", {k: v for k, v in state.items() if not k.startswith("Mixed_7c.branch_pool")}),
        ("extra.pth", {**state, "AuxLogits.fc.weight": torch.zeros(1008, 768)}),
        ("shape.pth", {**state, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}),
    ):
        torch.save(bad, tmp_path / name)
        with pytest.raises(CheckpointError, match=rf"{name}: not pytorch-fid's FID Inception weights \(.*(Mixed_7c|AuxLogits|fc.weight)") as e:
            FIDInceptionV3.from_file(tmp_path / name)
        assert "\n" not in str(e.value)
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="junk.pth: not a readable torch weights file"):
        FIDInceptionV3.from_file(tmp_path / "junk.pth")


def test_registry_pins_pytorch_fids_file(pytorch_fid):
    entry = registry.get_entry(inception_mod.WEIGHTS_NAME)
    (wf,) = entry.files
    assert wf.urls == (pytorch_fid.FID_WEIGHTS_URL,) and wf.filename == WEIGHTS_FILE
    assert len(wf.sha256) == 64 and wf.sha256.startswith(WEIGHTS_FILE.rsplit("-", 1)[1].split(".")[0])  # torch hub's name prefix
    assert wf.size == 95628359 and entry.config is None and entry.license
    assert inception_mod.MISSING_HINT.endswith(f"vaecli fetch-weights {inception_mod.WEIGHTS_NAME}")


def test_load_inception_from_the_cache_checks_the_pin(tmp_path, published_layout, monkeypatch):
    assert load_inception("cpu", cache_dir=tmp_path) is None  # not fetched: the caller prints the hint
    entry = registry.get_entry(inception_mod.WEIGHTS_NAME)
    dest = registry.cached_file(entry.name, entry.files[0], tmp_path)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(published_layout.read_bytes())
    with pytest.raises(CheckpointError, match="sha256 mismatch"):  # our random file is not the pinned one
        load_inception("cpu", cache_dir=tmp_path)
    ours = dataclasses.replace(entry.files[0], sha256=hashlib.sha256(dest.read_bytes()).hexdigest())
    monkeypatch.setattr(registry, "get_entry", lambda name: dataclasses.replace(entry, files=(ours,)))
    assert isinstance(load_inception("cpu", cache_dir=tmp_path), FIDInceptionV3)
