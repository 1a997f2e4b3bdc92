"""The embedded default model: the shipped file itself, its quality on a held-out photo, and its training script."""

from __future__ import annotations

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
SHIPPED = registry.default_weights_path()
TRAIN_SCRIPT = REPO / "scripts" / "train_vae.py"
MAX_BYTES = 10 * 1024 * 1024
PSNR_FLOOR_DB = 25.5  # shipped model: 26.62 dB on this crop (the 32-group model before it: 24.57); untrained: about 10 dB


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
    metrics = json.loads(meta["held_out_metrics"])
    assert metrics["size"] == 512
    assert set(metrics["images"]) == {i["name"].partition(":")[2] for i in held_out}
    # scale_by_std: the recorded latent std and the config's scale agree
    assert abs(config_from_weights(SHIPPED).scaling_factor * float(meta["latent_std"]) - 1.0) < 1e-3


def _psnr_uint8(vae, photo: np.ndarray) -> float:
    """PSNR of the posterior mode's reconstruction, quantised to uint8 as a saved PNG is."""
    x = torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1  # (1, 3, H, W)
    with torch.inference_mode():
        rec = vae.decode(vae.encode(x).mode())
    rec_u8 = ((rec[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()  # (H, W, 3)
    mse = np.mean((rec_u8.astype(np.float64) - photo.astype(np.float64)) ** 2) / 255**2
    return float(10 * np.log10(1 / mse))


def _held_out_512() -> dict[str, np.ndarray]:
    """The held-out photographs' lossless 512x512 centre crops, rebuilt from scikit-image."""
    skimage_data = pytest.importorskip("skimage.data")
    out = {}
    for name in ("astronaut", "immunohistochemistry", "retina"):
        img = getattr(skimage_data, name)()
        top, left = (img.shape[0] - 512) // 2, (img.shape[1] - 512) // 2
        out[name] = img[top : top + 512, left : left + 512, :3]
    return out


def test_recorded_held_out_metrics_are_what_the_shipped_file_gives():
    recorded = json.loads(read_metadata(SHIPPED)["held_out_metrics"])["images"]
    vae = load_vae(device="cpu")
    for name, photo in _held_out_512().items():
        assert abs(_psnr_uint8(vae, photo) - recorded[name]["psnr"]) < 0.05, name


def test_mean_held_out_psnr_reaches_the_issue_bar():
    vae = load_vae(device="cpu")
    psnrs = [_psnr_uint8(vae, photo) for photo in _held_out_512().values()]
    assert sum(psnrs) / len(psnrs) >= 26.0


def test_load_vae_with_no_arguments_reconstructs_a_held_out_photo():
    vae = load_vae(device="cpu")
    assert vae.config.name == registry.DEFAULT_MODEL and next(vae.parameters()).dtype == torch.float32
    photo = np.asarray(Image.open(REPO / "samples" / "astronaut.jpg").convert("RGB"))
    crop = photo[128:384, 128:384]  # (256, 256, 3): face, suit and flag of a held-out photograph
    psnr = _psnr_uint8(vae, crop)
    assert psnr >= PSNR_FLOOR_DB, f"held-out PSNR {psnr:.2f} dB below the {PSNR_FLOOR_DB} dB floor"
    # scaled latents have about unit variance: what scaling_factor (scale_by_std) promises
    x = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1  # (1, 3, 256, 256)
    with torch.inference_mode():
        z = vae.encode(x).mode()  # (1, 8, 64, 64)
    assert z.shape == (1, vae.latent_channels, 256 // vae.downsample_factor, 256 // vae.downsample_factor)
    assert 0.5 < vae.scale_latents(z).std().item() < 2.0


def _train(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(TRAIN_SCRIPT), "--out", str(out), "--crop", "32", "--batch-size", "2", "--eval-size", "64"]
    cmd += ["--scale-batches", "1", "--threads", "1", "--log-every", "1", "--eval-every", "100", "--ckpt-every", "100", *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _checkpoint(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)


def test_training_script_runs_two_steps_and_exports_a_loadable_model(tmp_path):
    out = tmp_path / "run"
    log = _train(out, "--steps", "2").stdout
    assert "step 2/2" in log and _checkpoint(out)["step"] == 2
    # the exported file is self-describing: it loads with no config, its scale set by scale_by_std
    vae = load_vae(weights=out / "vaecli-default.safetensors", device="cpu")
    assert vae.config.name == registry.DEFAULT_MODEL and vae.config.scaling_factor is not None
    meta = read_metadata(out / "vaecli-default.safetensors")
    assert meta["training_steps"] == "2" and "--steps 2" in meta["training_command"]


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
    shipped model was made), with a fresh schedule; the export counts and records both runs."""
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
