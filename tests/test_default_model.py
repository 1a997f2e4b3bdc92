"""The embedded default model: the shipped file itself, its quality on held-out photos at two sizes, and its training script.

Every expensive roundtrip runs once per module (fixtures below) and is shared by the tests that check it.
The held-out photos come from scikit-image, so these tests need none of the wallpaper packages the
model was trained and judged on (scripts/default_model_data.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from vaecli.api import load_vae
from vaecli.weights import registry
from vaecli.weights.checkpoints import config_from_weights, read_metadata

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import default_model_data as data  # noqa: E402  (the training scripts' data and metrics)
import default_model_eval as evaluation  # noqa: E402
from train_vae_model import (  # noqa: E402
    ImagePooledGroupNorm,
    fold_norm_statistics,
    pool_group_norms,
    set_stats_margin,
)

SHIPPED = registry.default_weights_path()
TRAIN_SCRIPT = REPO / "scripts" / "train_vae.py"
MAX_BYTES = 10 * 1024 * 1024
SKIMAGE_HELD_OUT = data.HELD_OUT[:3]  # astronaut, immunohistochemistry, retina: in every test environment
COLOUR_SHIFT_BOUND = 2.0  # 1/255 units: the bound on the largest channel-mean difference
PSNR_FLOOR_DB = 25.5  # astronaut's face crop below: shipped model 26.62 dB; the 32-group model before it 24.57; untrained about 10
MEAN_PSNR_FLOOR_DB = 26.0  # the three photos above at 512x512
RETINA_FLOOR_DB = {512: 33.0, 2048: 33.0}  # GroupNorm model before: 36.75 dB / 4.2 colour shift at 512, 34.26 dB / 5.5 at 2048x512


@pytest.fixture(scope="module")
def vae():
    return load_vae(device="cpu")


@pytest.fixture(scope="module")
def held_out_512():
    """The scikit-image held-out photos' 512x512 views, as the recorded metrics took them."""
    pytest.importorskip("skimage.data")
    return dict(data.held_out_crops(512, SKIMAGE_HELD_OUT))


@pytest.fixture(scope="module")
def metrics_512(vae, held_out_512) -> dict:
    """Each photo's PSNR/SSIM/colour shift after one roundtrip, shared by the tests below."""
    return {name: evaluation.image_metrics(photo, evaluation.reconstruct(vae, photo)) for name, photo in held_out_512.items()}


def test_shipped_file_is_small_fp16_and_self_describing():
    assert SHIPPED.stat().st_size <= MAX_BYTES
    with safe_open(str(SHIPPED), framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"F16"}
    config = config_from_weights(SHIPPED)
    assert config is not None and config.name == registry.DEFAULT_MODEL
    assert config.scaling_factor is not None and config.scaling_factor > 0 and config.shift_factor == 0.0


def test_metadata_records_how_the_model_was_made():
    meta = read_metadata(SHIPPED)
    assert meta["training_command"].startswith("python scripts/train_vae.py")
    assert int(meta["training_steps"]) > 0
    assert len(meta["git_commit"].split("-")[0]) == 40
    train = json.loads(meta["training_data"])
    held_out = json.loads(meta["held_out_data"])
    assert all(item["licence"] and item["source"] for item in train + held_out)
    assert not {i["name"] for i in train} & {i["name"] for i in held_out}
    assert not any("mate-backgrounds" in i["name"] for i in train + held_out)
    metrics = json.loads(meta["held_out_metrics"])
    assert metrics["size"] == 512
    photos = {img.short for img in (data.Image(**i) for i in held_out) if img.kind == "photo"}
    assert set(metrics["images"]) == photos - {"text", "page"}  # the photographs that have a 512x512 view
    # scale_by_std: the recorded latent std and the config's scale agree
    assert abs(config_from_weights(SHIPPED).scaling_factor * float(meta["latent_std"]) - 1.0) < 1e-3


def test_recorded_held_out_metrics_are_what_the_shipped_file_gives(metrics_512):
    recorded = json.loads(read_metadata(SHIPPED)["held_out_metrics"])["images"]
    for name, got in metrics_512.items():
        assert abs(got["psnr"] - recorded[name]["psnr"]) < 0.05, name
        assert abs(got["ssim"] - recorded[name]["ssim"]) < 0.002, name


def test_mean_held_out_psnr_reaches_the_floor(metrics_512):
    psnrs = [m["psnr"] for m in metrics_512.values()]
    assert sum(psnrs) / len(psnrs) >= MEAN_PSNR_FLOOR_DB


def test_shipped_model_is_faithful_at_512_and_2048(vae, metrics_512):
    """The held-out retina: its 512x512 centre (`samples/retina.jpg`'s source), and a 2048x512 band
    through the whole photo upscaled (Lanczos) to 2048x2048: PSNR above a floor and no colour cast.
    No held-out photo that every test environment has is 2048 px; upscaling keeps a real
    photograph's colours in a wider image, which is what cast the colours of the GroupNorm model
    before this one (4.2/255 at 512, 5.5/255 on the band). The band costs 4 roundtrips of 512x512,
    the whole 2048x2048 square 16."""
    retina = data.load_rgb("skimage:retina")  # (1411, 1411, 3)
    big = np.asarray(Image.fromarray(retina).resize((2048, 2048), Image.Resampling.LANCZOS))
    band = np.ascontiguousarray(big[768:1280])  # (512, 2048, 3)
    at = {512: metrics_512["retina"], 2048: evaluation.image_metrics(band, evaluation.reconstruct(vae, band))}
    for size, got in at.items():
        assert got["psnr"] >= RETINA_FLOOR_DB[size], (size, got)
        assert got["colour_shift"] < COLOUR_SHIFT_BOUND, (size, got)


def test_load_vae_with_no_arguments_reconstructs_a_held_out_photo(vae):
    assert vae.config.name == registry.DEFAULT_MODEL and next(vae.parameters()).dtype == torch.float32
    photo = np.asarray(Image.open(REPO / "samples" / "astronaut.jpg").convert("RGB"))
    crop = photo[128:384, 128:384]  # (256, 256, 3): face, suit and flag of a held-out photograph
    psnr = evaluation.image_metrics(crop, evaluation.reconstruct(vae, crop))["psnr"]
    assert psnr >= PSNR_FLOOR_DB, f"held-out PSNR {psnr:.2f} dB below the {PSNR_FLOOR_DB} dB floor"
    # scaled latents have about unit variance: what scaling_factor (scale_by_std) promises
    x = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1  # (1, 3, 256, 256)
    with torch.inference_mode():
        z = vae.encode(x).mode()  # (1, 8, 64, 64)
    assert z.shape == (1, vae.latent_channels, 256 // vae.downsample_factor, 256 // vae.downsample_factor)
    assert 0.5 < vae.scale_latents(z).std().item() < 2.0


def test_pooled_group_norm_is_group_norm_over_the_crops_side_by_side():
    """Training normalises each view's crops with the view's statistics: exactly GroupNorm over the
    crops laid side by side, with the module's own parameters and state_dict."""
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(8, 64, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(6, 64, 5, 7) * torch.linspace(0.5, 3, 6).view(6, 1, 1, 1) + torch.randn(6, 64, 1, 1)  # 2 views x 3 crops
    model = torch.nn.Sequential(norm)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pool_group_norms(model, 3)
    assert isinstance(model[0], ImagePooledGroupNorm) and model.state_dict().keys() == state.keys()
    got = model(x)  # (6, 64, 5, 7)
    for view in range(2):
        side_by_side = torch.cat(list(x[3 * view : 3 * view + 3]), dim=-1)[None]  # (1, 64, 5, 21)
        want = torch.nn.functional.group_norm(side_by_side, 8, state["0.weight"], state["0.bias"], 1e-6)
        torch.testing.assert_close(torch.cat(list(got[3 * view : 3 * view + 3]), dim=-1)[None], want, rtol=1e-5, atol=1e-5)
    model[0].crops_per_image = 1  # one crop per image: plain GroupNorm
    torch.testing.assert_close(model(x), torch.nn.functional.group_norm(x, 8, state["0.weight"], state["0.bias"], 1e-6))


def test_pooled_group_norm_margin_takes_statistics_from_the_crops_interiors():
    """With a margin, each view's statistics come from its crops' interiors (float64 reference), applied to whole crops."""
    torch.manual_seed(1)
    x = torch.randn(4, 16, 10, 10, dtype=torch.float64) + torch.randn(4, 16, 1, 1, dtype=torch.float64)  # 2 views x 2 crops
    x[..., 0, :] += 5.0  # a border row unlike the interior, as zero padding makes it
    norm = torch.nn.GroupNorm(4, 16, eps=1e-6).double()
    pool_group_norms(norm, 2)
    set_stats_margin(norm, 0.2)  # 2 of 10 pixels at each edge
    got = norm(x)
    for view in range(2):
        crops = x[2 * view : 2 * view + 2]  # (2, 16, 10, 10)
        inner = crops[..., 2:8, 2:8].reshape(2, 4, 4, 36).transpose(0, 1).reshape(4, -1)  # (groups, all interior values)
        mean, var = inner.mean(1), inner.var(1, unbiased=False)
        want = (crops - mean.repeat_interleave(4).view(1, 16, 1, 1)) / (var.repeat_interleave(4).view(1, 16, 1, 1) + 1e-6).sqrt()
        torch.testing.assert_close(got[2 * view : 2 * view + 2], want)


def _train(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(TRAIN_SCRIPT), "--out", str(out), "--crop", "32", "--batch-size", "2", "--crops-per-view", "2"]
    cmd += ["--eval-size", "64", "--train-images", "3", "--eval-images", "3", "--scale-batches", "1", "--threads", "1"]
    cmd += ["--log-every", "1", "--eval-every", "100", "--ckpt-every", "100", *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _checkpoint(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)


def test_training_script_runs_two_steps_and_exports_a_loadable_model(tmp_path):
    out = tmp_path / "run"
    log = _train(out, "--steps", "2", "--colour-weight", "1").stdout
    assert "step 2/2" in log and _checkpoint(out)["step"] == 2
    # the exported file is self-describing: it loads with no config, its scale set by scale_by_std
    vae = load_vae(weights=out / "vaecli-default.safetensors", device="cpu")
    assert vae.config.name == registry.DEFAULT_MODEL and vae.config.scaling_factor is not None
    meta = read_metadata(out / "vaecli-default.safetensors")
    assert meta["training_steps"] == "2" and "--steps 2" in meta["training_command"]
    assert set(json.loads(meta["held_out_metrics"])["images"]) == {"astronaut", "immunohistochemistry", "retina"}


def test_minutes_sets_the_steps_it_records_and_crop_sizes_vary_the_view(tmp_path):
    """--minutes times steps 10-30 and sets --steps (here: time is up, so 30); the recorded command,
    which appends that --steps, is what reproduces the run. --crop-sizes draws each step's side."""
    out = tmp_path / "run"
    log = _train(out, "--steps", "1000", "--minutes", "0.001", "--warmup", "40", "--crop-sizes", "32", "64", "--log-every", "10").stdout
    assert "--minutes 0.001: --steps 30" in log and "step 30/30" in log and _checkpoint(out)["step"] == 30
    meta = read_metadata(out / "vaecli-default.safetensors")
    assert meta["training_steps"] == "30" and meta["training_command"].endswith("--steps 30")


def test_minutes_refuses_a_warm_up_the_timed_steps_would_outlast(tmp_path):
    cmd = [sys.executable, str(TRAIN_SCRIPT), "--out", str(tmp_path), "--minutes", "1", "--warmup", "20", "--train-images", "1", "--eval-images", "1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--warmup above 30" in proc.stderr


def test_view_sampler_cuts_the_crop_side_asked_for_at_the_step_pixel_budget():
    from train_vae import views_and_crop
    from train_vae_batches import ViewSampler

    photos = [data.load_rgb("skimage:chelsea"), data.load_rgb("skimage:coffee")]  # 451x300, 600x400
    sampler = ViewSampler(photos, [1.0, 1.0], crop=32, crops_per_view=2, seed=0)
    assert sampler.batch(3).shape == (6, 3, 32, 32)
    assert sampler.batch(1, 200).shape == (2, 3, 200, 200)
    args = argparse.Namespace(crop_sizes=[32, 64, 256], crop=32, batch_size=8)
    drawn = {views_and_crop(args, sampler) for _ in range(60)}
    assert drawn == {(8, 32), (2, 64), (1, 256)}  # 8 views of 32 px' worth of pixels, at least one view
    args.crop_sizes = None
    assert views_and_crop(args, sampler) == (8, 32)


def test_image_pack_holds_the_images_downscaled_and_load_rgb_reads_it(tmp_path):
    """scripts/default_model_pack.py: what a GPU machine without the apt packages trains on."""
    from PIL import Image as PILImage

    names = ["skimage:chelsea", "skimage:retina"]
    cmd = [sys.executable, str(REPO / "scripts" / "default_model_pack.py"), "--out", str(tmp_path), "--long-side", "400", "--names", *names]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=300)
    index = data.pack_index(tmp_path)
    assert set(index) == set(names) and index["skimage:retina"] == {"file": index["skimage:retina"]["file"], "size": "1411x1411", "packed": "400x400"}
    assert index["skimage:chelsea"]["packed"] == "400x266"
    assert data.pack_parameters(tmp_path) == {"long_side": 400, "quality": 93, "resample": "Lanczos"}
    for name, size in (("skimage:chelsea", (400, 266)), ("skimage:retina", (400, 400))):
        want = np.asarray(PILImage.fromarray(data.load_rgb(name)).resize(size, PILImage.Resampling.LANCZOS)).astype(float)
        got = data.load_rgb(name, tmp_path)
        assert got.shape == want.shape and np.abs(got - want).mean() < 2.0, name  # JPEG q93 of the resized photo


def test_borrowed_statistics_are_group_norm_and_borrow_what_they_recorded():
    """scripts/default_model_norm_stats.py: in "own" mode the replaced norms are nn.GroupNorm (the tool
    measures a GroupNorm model of the default geometry); borrowing statistics recorded on the same
    image changes nothing; borrowing another image's changes the result."""
    from default_model_norm_stats import BorrowedStatistics
    from reference_models import random_vaecli

    from vaecli.config import VAEConfig

    photo = data.centre_crop(data.load_rgb("skimage:astronaut"), 96)
    other = data.centre_crop(data.load_rgb("skimage:chelsea"), 96)
    geometry = dict(ch=32, ch_mult=(2, 1, 2), num_res_blocks=1, z_channels=8, norm_num_groups=8, attn_type="none")
    vae = random_vaecli(VAEConfig(**geometry), norm_weight=(0.5, 1.5), norm_bias=(0.0, 0.3))
    want = evaluation.reconstruct(vae, photo)
    stats = BorrowedStatistics(vae)
    assert len(stats.norms) == 28 and set(stats.parts()) == {"decoder.mid.block_1", "decoder.mid.block_2", "decoder.up.0", "decoder.up.1", "decoder.up.2", "decoder.norm_out"}
    assert np.abs(evaluation.reconstruct(vae, photo).astype(int) - want).max() <= 1  # own statistics: GroupNorm
    stats.mode = "record"
    evaluation.reconstruct(vae, photo)
    stats.mode, stats.chosen = "borrow", set(range(len(stats.norms)))
    assert np.abs(evaluation.reconstruct(vae, photo).astype(int) - want).max() <= 1
    stats.mode = "record"
    evaluation.reconstruct(vae, other)
    stats.mode = "borrow"
    assert np.abs(evaluation.reconstruct(vae, photo).astype(int) - want).mean() > 1


def test_training_with_patchgan_and_ema_resumes_exactly(tmp_path):
    """Two steps, then --resume to three, equals three steps straight: weights, EMA, discriminator and all."""
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    _train(resumed, "--steps", "2", "--gan", "--ema", "0.5")
    assert _checkpoint(resumed)["step"] == 2
    log = _train(resumed, "--steps", "3", "--resume", "--gan", "--ema", "0.5").stdout
    assert "resumed from" in log and "at step 2" in log and "step 3/3" in log
    assert " dw " in log  # the adaptive GAN weight was computed
    _train(straight, "--steps", "3", "--gan", "--ema", "0.5")
    a, b = _checkpoint(resumed), _checkpoint(straight)
    assert a["step"] == b["step"] == 3
    # the EMA moved, and is neither the live weights nor the initial ones
    name = "decoder.conv_out.weight"
    assert not torch.equal(a["ema"][name], a["model"][name])
    for key in ("model", "ema", "disc"):
        assert a[key].keys() == b[key].keys()
        for name, tensor in a[key].items():
            torch.testing.assert_close(tensor, b[key][name], rtol=0, atol=0, msg=f"{key}.{name} differs after resume")


def test_init_from_carries_weights_into_a_new_geometry_and_records_the_chain(tmp_path):
    """--init-from starts a run from another run's weights (here: regrouping the GroupNorms, as the
    shipped model's second phase did), with a fresh schedule; the export counts and records both runs."""
    parent, child = tmp_path / "parent", tmp_path / "child"
    _train(parent, "--steps", "2", "--norm-num-groups", "32")
    log = _train(child, "--steps", "1", "--lr", "0", "--lr-final", "0", "--warmup", "0", "--init-from", str(parent / "checkpoint.pt"), "--norm-num-groups", "8").stdout
    assert "initialised from" in log
    a, b = _checkpoint(parent), _checkpoint(child)
    assert b["geometry"]["norm_num_groups"] == 8 and a["geometry"]["norm_num_groups"] == 32
    for name, tensor in a["model"].items():  # lr 0: one step leaves the carried weights as they were
        torch.testing.assert_close(b["model"][name], tensor, rtol=0, atol=0, msg=name)
    vae = load_vae(weights=child / "vaecli-default.safetensors", device="cpu")
    assert vae.config.norm_num_groups == 8 and vae.encoder.norm_out.num_groups == 8
    meta = read_metadata(child / "vaecli-default.safetensors")
    assert meta["training_steps"] == "3"
    invocations = json.loads(meta["training_invocations"])
    assert len(invocations) == 2 and "--norm-num-groups 32" in invocations[0] and "--init-from" in invocations[1]


def test_init_from_an_exported_file_inherits_its_recorded_history(tmp_path):
    """Starting from a shipped .safetensors (as the current model did) carries its weights, steps and invocations."""
    child = tmp_path / "child"
    _train(child, "--steps", "1", "--lr", "0", "--lr-final", "0", "--warmup", "0", "--init-from", str(SHIPPED))
    shipped_meta = read_metadata(SHIPPED)
    meta = read_metadata(child / "vaecli-default.safetensors")
    assert int(meta["training_steps"]) == int(shipped_meta["training_steps"]) + 1
    parents = json.loads(shipped_meta["training_invocations"])
    invocations = json.loads(meta["training_invocations"])
    assert invocations[: len(parents)] == parents and "--init-from" in invocations[-1]
    child_state = _checkpoint(child)["model"]
    for name, tensor in load_vae(device="cpu").state_dict().items():
        torch.testing.assert_close(child_state[name], tensor, rtol=0, atol=0, msg=name)


def test_folding_an_image_s_statistics_gives_the_group_norm_model_s_reconstruction_of_it():
    """fold_norm_statistics with the statistics of one photograph: the affine model reconstructs that
    photograph as the GroupNorm model does; another photograph, with other statistics, it does not."""
    from reference_models import random_vaecli

    from vaecli.config import VAEConfig
    from vaecli.model import AutoencoderKL

    geometry = dict(ch=32, ch_mult=(2, 1, 2), num_res_blocks=1, z_channels=8, norm_num_groups=8, attn_type="none")
    grouped = random_vaecli(VAEConfig(**geometry), norm_weight=(0.5, 1.5), norm_bias=(0.0, 0.3))
    photo, other = (evaluation_input(data.load_rgb(name)[:96, :128]) for name in ("skimage:astronaut", "skimage:coffee"))
    affine = AutoencoderKL(VAEConfig(**geometry, norm_type="affine")).eval()
    affine.load_state_dict(fold_norm_statistics(grouped, [photo]))
    with torch.no_grad():
        same = [m.decode(m.encode(photo).mode()) for m in (grouped, affine)]
        differ = [m.decode(m.encode(other).mode()) for m in (grouped, affine)]
    torch.testing.assert_close(same[1], same[0], rtol=0, atol=1e-4)
    assert (differ[1] - differ[0]).abs().max() > 1e-2


def evaluation_input(photo: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None].float().div(127.5).sub(1)


def test_affine_norms_start_from_a_group_norm_parent_and_are_inherited_never_undone(tmp_path):
    """--norm-type affine from a GroupNorm parent folds its statistics; a child of an affine model is
    affine by default; asking for GroupNorm from an affine parent is refused (its statistics are gone)."""
    parent, child, grandchild = tmp_path / "parent", tmp_path / "child", tmp_path / "grandchild"
    _train(parent, "--steps", "1")
    log = _train(child, "--steps", "1", "--norm-type", "affine", "--init-from", str(parent / "checkpoint.pt")).stdout
    assert "folded the GroupNorm statistics" in log
    assert load_vae(weights=child / "vaecli-default.safetensors", device="cpu").config.norm_type == "affine"
    _train(grandchild, "--steps", "1", "--init-from", str(child / "vaecli-default.safetensors"))
    assert load_vae(weights=grandchild / "vaecli-default.safetensors", device="cpu").config.norm_type == "affine"
    refused = subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), "--out", str(tmp_path / "refused"), "--norm-type", "group", "--init-from", str(child / "checkpoint.pt")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode == 2 and "fixed statistics" in refused.stderr
    assert not (tmp_path / "refused").exists()  # a refused run leaves no folder behind
