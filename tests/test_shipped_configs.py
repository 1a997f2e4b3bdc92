"""Every shipped config can be named: `--model kl-f4 --weights FILE`, listed by `vaecli models`, refused alone with the way out."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from tests.clitools import noise_image, run_json, run_main
from vaecli.config import shipped_config, shipped_config_names
from vaecli.io.latents import read_latent
from vaecli.model import AutoencoderKL


def test_models_lists_every_shipped_config(capsys):
    code, out, _ = run_main(capsys, "models", "--json")
    rows = {r["name"]: r for r in json.loads(out)["models"]}
    assert code == 0
    for name in ("kl-f4", "kl-f16", "kl-f32"):
        assert rows[name]["cached"] is False and rows[name]["description"].startswith("no weights published")
    assert rows["kl-f4"]["latent_channels"] == 3 and rows["kl-f32"]["downsample_factor"] == 32
    assert set(shipped_config_names()) <= set(rows)  # each config by its own name, the registry's ones too


@pytest.mark.parametrize("name", ["kl-f4", "kl-f16"])
def test_a_config_name_alone_says_no_weights_are_published(tmp_path, capsys, name):
    noise_image(tmp_path / "a.png", 16, 16, 0)
    code, out, err = run_main(capsys, "encode", tmp_path / "a.png", "--model", name)
    (line,) = err.splitlines()
    assert code == 2 and "no weights published" in line and f"--model {name} --weights FILE" in line


def test_kl_f4_runs_with_a_weights_file_from_anywhere(tmp_path, capsys):
    """A plain state dict (no config inside) with --model kl-f4, from a folder outside the checkout."""
    torch.manual_seed(0)
    vae = AutoencoderKL(shipped_config("kl-f4")).eval()
    save_file({k: v.half().contiguous() for k, v in vae.state_dict().items()}, tmp_path / "klf4.safetensors")
    noise_image(tmp_path / "a.png", 20, 12, 0)
    code, doc, err = run_json(capsys, "encode", tmp_path / "a.png", "--model", "kl-f4", "--weights", tmp_path / "klf4.safetensors",
                              "-o", tmp_path / "lat")
    assert code == 0, err
    latent = read_latent(tmp_path / "lat" / "a.safetensors")
    assert latent.tensor.shape == (3, 3, 5) and latent.meta.model == "kl-f4"
    code, doc, err = run_json(capsys, "decode", tmp_path / "lat", "-o", tmp_path / "dec")
    assert code == 0 and doc["results"][0]["width"] == 20, err
