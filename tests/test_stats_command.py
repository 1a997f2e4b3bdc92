"""`vaecli stats`, `encode --normalize` and `decode` through the real CLI: statistics of a model whose latents are
a known Gaussian, a normaliser file written under the output-safety rule with its recipe, an exact round trip
through a normalised latent, whitened latents with identity covariance, and the normaliser in the recipe."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from tests.clitools import run_json, run_main
from tests.reference_models import wide_photo
from vaecli.config import VAEConfig
from vaecli.io.latents import read_latent
from vaecli.io.provenance import PROVENANCE_KEY
from vaecli.model import AutoencoderKL
from vaecli.stats import normalizer_file
from vaecli.stats.moments import LatentMoments
from vaecli.weights.checkpoints import save_weights
from vaecli.weights.formats import read_header

MU = [0.5, -1.0, 2.0, 0.0]
SIGMA = [1.0, 0.5, 2.0, 0.25]


@pytest.fixture(scope="module")
def gaussian_weights(tmp_path_factory):
    """A model whose posterior is N(MU_c, SIGMA_c^2) at every latent cell of every image: the encoder's last
    convolution has zero weights and bias [MU, log SIGMA^2], and there is no quant conv after it (nor attention,
    whose cost at factor 2 would be that of the whole test suite)."""
    cfg = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, embed_dim=None, scaling_factor=0.5, attn_type="none", name="gaussian")
    torch.manual_seed(0)
    vae = AutoencoderKL(cfg).eval()
    with torch.no_grad():
        vae.encoder.conv_out.weight.zero_()
        vae.encoder.conv_out.bias.copy_(torch.tensor(MU + [2 * math.log(s) for s in SIGMA]))
    path = tmp_path_factory.mktemp("gaussian") / "gaussian.safetensors"
    save_weights(vae, path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real photographs at odd sizes: astronaut | coffee crops, and skimage's cat."""
    data = pytest.importorskip("skimage.data")
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(wide_photo(397, 1031)).save(folder / "wide.png")
    Image.fromarray(wide_photo(301, 517)).save(folder / "narrow.png")
    Image.fromarray(data.chelsea()[:299, :451]).save(folder / "cat.png")
    return folder


def test_stats_of_a_known_gaussian_within_one_percent(gaussian_weights, photos, capsys):
    """--sample draws the latents encode --sample would store: N(MU, SIGMA^2) per channel, over 240k cells."""
    code, doc, err = run_json(capsys, "stats", photos, "--weights", gaussian_weights, "--sample", "--device", "cpu")
    assert code == 0, err
    s = doc["statistics"]
    assert s["count"] == 199 * 516 + 151 * 259 + 150 * 226 and doc["data"]["inputs"] == 3  # f2 cells of the padded images
    for c in range(4):
        assert abs(s["mean"][c] - MU[c]) <= 0.01 * SIGMA[c] and abs(s["std"][c] / SIGMA[c] - 1) <= 0.01
    true_var = float(np.mean(np.square(SIGMA)) + np.var(MU))  # within- plus between-channel spread
    assert abs(s["global_mean"] - np.mean(MU)) <= 0.01 * math.sqrt(true_var)
    assert abs(s["suggested"]["sd"]["scaling_factor"] * math.sqrt(true_var) - 1) <= 0.01
    assert s["suggested"]["sd3_flux"]["shift_factor"] == s["global_mean"]


@pytest.fixture(scope="module")
def fitted(photos, cli_weights, tmp_path_factory):
    """`stats --whiten -o` on the photographs with the tiny f8 model (mode latents); then the same data encoded
    plainly (--no-scale) and with --normalize."""
    from vaecli.cli.app import main

    out = tmp_path_factory.mktemp("fitted")

    def run(*args) -> None:
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in (*args, "--weights", cli_weights, "--device", "cpu", "-q")])
        assert e.value.code == 0

    run("stats", photos, "--whiten", "-o", out / "white.safetensors")
    run("encode", photos, "--no-scale", "-o", out / "plain")
    run("encode", photos, "--normalize", out / "white.safetensors", "-o", out / "normed")
    return out


def test_normalised_latents_invert_exactly_and_decode_with_no_flags(fitted, capsys):
    for name in ("wide", "narrow", "cat"):
        plain, normed = read_latent(fitted / "plain" / f"{name}.safetensors"), read_latent(fitted / "normed" / f"{name}.safetensors")
        assert normed.meta.normalizer is not None and not normed.meta.scaled
        norm = normalizer_file.from_text(normed.meta.normalizer)
        assert norm.whiten and norm.channels == 4
        back = norm.inverse(normed.tensor[None])[0]
        assert (back - plain.tensor).abs().max() <= 1e-5 * plain.tensor.abs().max()
    for kind in ("plain", "normed"):
        code, _, err = run_main(capsys, "decode", fitted / kind, "-o", fitted / f"{kind}-decoded", "--device", "cpu")
        assert code == 0, err
    for name in ("wide", "narrow", "cat"):
        a = np.asarray(Image.open(fitted / "plain-decoded" / f"{name}.png")).astype(int)
        b = np.asarray(Image.open(fitted / "normed-decoded" / f"{name}.png")).astype(int)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1


def test_whitened_latents_have_identity_covariance(fitted):
    moments = LatentMoments.empty(4)
    for path in sorted((fitted / "normed").glob("*.safetensors")):
        moments.update(read_latent(path).tensor)
    assert (moments.covariance - torch.eye(4, dtype=torch.float64)).abs().max() <= 0.02
    assert moments.mean.abs().max() <= 0.02


def test_the_normaliser_file_records_its_recipe(fitted, photos, cli_weights):
    doc = json.loads(read_header(fitted / "white.safetensors").metadata[PROVENANCE_KEY])
    assert doc["model"]["weights_sha256"] == hashlib.sha256(cli_weights.read_bytes()).hexdigest()
    assert doc["options"]["whiten"] is True and doc["options"]["posterior"] == "mode" and doc["data"]["inputs"] == 3
    names = sorted(f"{photos.name}/{p.name}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n" for p in photos.iterdir())
    assert doc["data"]["sha256"] == hashlib.sha256("".join(names).encode()).hexdigest()


def test_another_normaliser_makes_the_latents_stale(fitted, photos, cli_weights, capsys, tmp_path):
    args = ("--weights", cli_weights, "--device", "cpu")
    code, _, err = run_main(capsys, "stats", photos, "-o", tmp_path / "plain.safetensors", *args)  # ActNorm only: another normaliser
    assert code == 0, err
    code, doc, _ = run_json(capsys, "encode", photos, "--normalize", fitted / "white.safetensors", "-o", fitted / "normed", *args)
    assert code == 0 and {r["status"] for r in doc["results"]} == {"skipped"}
    out = tmp_path / "again"
    for norm, want in (("white", "ok"), ("white", "skipped"), ("plain", "ok"), ("plain", "skipped")):
        code, doc, _ = run_json(capsys, "encode", photos, "--normalize", (fitted if norm == "white" else tmp_path) / f"{norm}.safetensors", "-o", out, *args)
        assert code == 0 and {r["status"] for r in doc["results"]} == {want}


def test_the_normaliser_file_is_never_written_over_a_users_file(photos, cli_weights, capsys, tmp_path):
    args = ("--weights", cli_weights, "--device", "cpu")
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"my own notes, not a normaliser")
    code, _, err = run_main(capsys, "stats", photos, "-o", mine, *args)
    assert code == 2 and "not a vaecli normaliser file" in err and mine.read_bytes() == b"my own notes, not a normaliser"
    ours = tmp_path / "n.safetensors"
    for _ in range(2):  # the second run replaces its own file
        code, _, err = run_main(capsys, "stats", photos, "-o", ours, *args)
        assert code == 0, err
    assert normalizer_file.load(ours).channels == 4 and sorted(p.name for p in tmp_path.iterdir()) == ["mine.safetensors", "n.safetensors"]
    code, _, err = run_main(capsys, "stats", photos, "-o", mine, "--overwrite", *args)
    assert code == 0 and normalizer_file.load(mine).channels == 4


def test_a_normaliser_for_another_model_is_a_usage_error(fitted, photos, capsys, tmp_path):
    code, _, err = run_main(capsys, "encode", photos, "--normalize", fitted / "white.safetensors", "-o", tmp_path / "x", "--device", "cpu")
    assert code == 2 and "white.safetensors: a normaliser of 4 channels" in err and not (tmp_path / "x").exists()


def _altered_normaliser(source, dest, tensor: str | None = None, index: int = 2, value: float = 1e300, **metadata):
    """A copy of a normaliser file with one tensor value or metadata entry changed (as an editor or a bug would)."""
    from safetensors.torch import load_file, save_file

    tensors, meta = load_file(source), dict(read_header(source).metadata)
    if tensor is not None:
        tensors[tensor] = tensors[tensor].clone()
        tensors[tensor][index] = value
    save_file(tensors, dest, metadata={**meta, **metadata})
    return dest


@pytest.mark.parametrize("tensor, metadata, cause", [
    ("actnorm.scale", {}, "actnorm.scale holds 1e+300, beyond float32's range"),
    ("actnorm.loc", {}, "actnorm.loc holds 1e+300, beyond float32's range"),
    (None, {"logdet_per_cell": "nan"}, "metadata logdet_per_cell='nan'"),
])
def test_a_normaliser_that_would_make_infinite_latents_is_refused_at_load(fitted, photos, cli_weights, capsys, tmp_path, tensor, metadata, cause):
    """Finite in float64 but not in float32 (1e300), or metadata that lies: exit 2, one line naming file and tensor, nothing written."""
    bad = _altered_normaliser(fitted / "white.safetensors", tmp_path / "bad.safetensors", tensor, **metadata)
    code, _, err = run_main(capsys, "encode", photos, "--normalize", bad, "-o", tmp_path / "x", "--weights", cli_weights, "--device", "cpu")
    assert code == 2 and err.count("\n") == 1 and f"{bad}: {cause}" in err, err
    assert not (tmp_path / "x").exists()


def test_a_latent_that_is_not_finite_fails_its_input_and_is_not_written(photos, capsys, tmp_path):
    """The second guard, whatever the cause: here a model whose latent mean (3e38) overflows float32 when scaled (x2)."""
    cfg = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, embed_dim=None, scaling_factor=2.0, attn_type="none", name="overflow")
    vae = AutoencoderKL(cfg).eval()
    with torch.no_grad():
        vae.encoder.conv_out.weight.zero_()
        vae.encoder.conv_out.bias.copy_(torch.tensor([3e38, 0.0, 0.0, 0.0] + [0.0] * 4))
    weights = tmp_path / "overflow.safetensors"
    save_weights(vae, weights)
    code, doc, err = run_json(capsys, "encode", photos, "--weights", weights, "-o", tmp_path / "out", "--device", "cpu")
    assert code == 1 and doc["summary"]["failed"] == 3, err
    for r in doc["results"]:
        assert r["status"] == "failed" and "\n" not in r["error"] and "NaN or infinite values" in r["error"] and r["input"] in r["error"]
    assert not list((tmp_path / "out").glob("*.safetensors"))
    code, doc, _ = run_json(capsys, "encode", photos, "--weights", weights, "--no-scale", "-o", tmp_path / "plain", "--device", "cpu")
    assert code == 0 and all(torch.isfinite(read_latent(p).tensor).all() for p in (tmp_path / "plain").glob("*.safetensors"))
