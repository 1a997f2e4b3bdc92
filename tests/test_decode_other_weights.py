"""decode with weights other than the ones that encoded the latents: one warning per run naming the count and
both weights' sha256, never an error and never silent (issue 11 follow-up: before, nothing was said).

Real `vaecli` subprocesses: Python shows a warning once per process, and a cron job sees exactly this stderr.
"""

from __future__ import annotations

import shutil

import torch

from tests.clitools import noise_image, vaecli
from tests.conftest import CLI_CONFIG
from vaecli.io.hashing import file_digest
from vaecli.model import AutoencoderKL
from vaecli.weights.checkpoints import save_weights


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "decoded with weights" in line]


def test_decoding_with_other_weights_warns_once_naming_both_hashes(tmp_path, cli_weights):
    env = {"VAECLI_CACHE": str(tmp_path / "cache")}
    torch.manual_seed(7)
    tuned = tmp_path / "tuned.safetensors"  # same architecture, other weights: a fine-tuned decoder
    save_weights(AutoencoderKL(CLI_CONFIG).eval(), tuned)
    encoder = tmp_path / "models" / "vae.safetensors"
    encoder.parent.mkdir()
    shutil.copyfile(cli_weights, encoder)
    for i in range(3):
        noise_image(tmp_path / "photos" / f"{i}.png", 24, 16, i)
    assert vaecli("encode", tmp_path / "photos", "-o", tmp_path / "lat", "--weights", encoder, "--device", "cpu", "-q", env=env).returncode == 0
    old, new = file_digest(encoder)[:12], file_digest(tuned)[:12]

    same = vaecli("decode", tmp_path / "lat", "-o", tmp_path / "same", "--device", "cpu", env=env)
    assert same.returncode == 0 and _warnings(same.stderr) == [], same.stderr

    chosen = vaecli("decode", tmp_path / "lat", "-o", tmp_path / "tuned", "--weights", tuned, "--device", "cpu", env=env)
    assert chosen.returncode == 0, chosen.stderr
    assert _warnings(chosen.stderr) == [
        f"Warning: 3 latents were encoded with weights sha256 {old} and are decoded with weights sha256 {new}: "
        "another decoder than the encoder's own; right for a decoder fine-tuned for that encoder, wrong for another model's "
        "latents (such as the embedded default model's before it was retrained): give the encoder's weights with --weights"
    ]

    # The weights file the latents name was replaced in place (a fine-tune saved over it): said too.
    shutil.copyfile(tuned, encoder)
    (tmp_path / "lat" / "1.safetensors").unlink()
    replaced = vaecli("decode", tmp_path / "lat", "-o", tmp_path / "replaced", "--device", "cpu", env=env)
    assert replaced.returncode == 0 and len(_warnings(replaced.stderr)) == 1, replaced.stderr
    assert f"2 latents were encoded with weights sha256 {old} and are decoded with weights sha256 {new}" in replaced.stderr
