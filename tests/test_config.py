"""Configs: every shipped config builds, matches diffusers' parameter layout, and validates."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from vaecli.config import (
    LIMITS,
    VAEConfig,
    load_config,
    shipped_config,
    shipped_config_names,
)
from vaecli.errors import ConfigError
from vaecli.model import AutoencoderKL
from vaecli.weights.keymap import diffusers_to_ldm_key, diffusers_vae_kwargs

REPO = Path(__file__).resolve().parents[1]
SHIPPED = shipped_config_names()


def test_known_configs_are_shipped():
    assert {"sd-vae-ft-mse", "sdxl-vae", "sd3-vae", "flux-vae", "kl-f4", "kl-f16", "kl-f32"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_builds(name):
    config = shipped_config(name)
    with torch.device("meta"):
        model = AutoencoderKL(config)
    assert model.encoder.conv_out.out_channels == 2 * config.z_channels
    assert config.downsample_factor == 2 ** (len(config.ch_mult) - 1)
    assert VAEConfig.from_json(config.to_json()) == config


def _diffusers_model(config: VAEConfig):
    """diffusers' AutoencoderKL with the same architecture, on the meta device (no init cost)."""
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        return diffusers.AutoencoderKL(**diffusers_vae_kwargs(config))


# diffusers has no per-level attention (kl-f16/f32) and ties the quant conv width to z_channels.
DIFFUSERS_EQUIVALENT = [
    n
    for n in SHIPPED
    if not shipped_config(n).attn_resolutions and shipped_config(n).embed_dim in (None, shipped_config(n).z_channels)
]


def test_diffusers_equivalents_cover_the_sd_family():
    assert {"sd-vae-ft-mse", "sdxl-vae", "sd3-vae", "flux-vae", "kl-f4"} <= set(DIFFUSERS_EQUIVALENT)


@pytest.mark.parametrize("name", DIFFUSERS_EQUIVALENT)
def test_parameter_layout_matches_diffusers(name):
    config = shipped_config(name)
    with torch.device("meta"):
        ours = AutoencoderKL(config)
    ref = _diffusers_model(config)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    mapped = {diffusers_to_ldm_key(k, len(config.ch_mult)): tuple(v.shape) for k, v in ref.state_dict().items()}
    assert set(mapped) == set(our_shapes)
    for key, shape in mapped.items():
        # Attention projections: Linear (C, C) in diffusers, 1x1 conv (C, C, 1, 1) in ldm.
        want = our_shapes[key]
        assert shape == want or (".attn_1." in key and want == (*shape, 1, 1)), key


TINY = dict(ch=32, ch_mult=[1, 2], num_res_blocks=1, z_channels=4, embed_dim=4)


@pytest.mark.parametrize(
    "key, value",
    [
        ("colour", 3),  # unknown key
        ("ch", 48),  # not divisible by the 32 GroupNorm groups
        ("ch_mult", []),
        ("attn_type", "flash"),
        ("embed_dim", -4),
        ("num_res_blocks", 0),
        ("dropout", 1.5),
        ("scaling_factor", 0),
        # bounds: a latent's metadata may carry any config; none of these may start a build
        ("num_res_blocks", 200000),
        ("ch", 1 << 20),
        ("ch_mult", [1] * 9),
        ("ch_mult", [1, 2, 4, 100]),
        ("ch_mult", 5),
        ("z_channels", 10**9),
        ("embed_dim", 10**9),
        ("in_channels", 100000),
        ("attn_resolutions", list(range(1, 100))),
        ("scaling_factor", float("inf")),
        ("shift_factor", float("nan")),
        # FLUX.2's latent normalisation and diffusers' force_upcast
        ("patch_size", [2]),
        ("patch_size", [100, 100]),
        ("patch_size", [2, 2]),  # without batch_norm_eps
        ("batch_norm_eps", 1e-4),  # without patch_size
        ("force_upcast", "yes"),
        ("norm_type", "batch"),
    ],
)
def test_invalid_values_name_the_key(tmp_path, key, value):
    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**TINY, key: value}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert key in message and str(path) in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match=key):
        VAEConfig.from_dict({**TINY, key: value})


def test_keys_added_later_leave_earlier_configs_json_unchanged():
    """A latent's recipe holds its config as JSON: configs without the later keys must serialise as before,
    or every latent written earlier would look stale and be redone."""
    before = {
        "attn_resolutions", "attn_type", "ch", "ch_mult", "description", "double_z", "dropout", "embed_dim", "in_channels",
        "name", "norm_num_groups", "num_res_blocks", "out_ch", "resolution", "scaling_factor", "shift_factor", "z_channels",
    }  # fmt: skip
    for name in SHIPPED:
        if name != "flux2-vae":
            assert set(json.loads(shipped_config(name).to_json())) == before, name
    flux2 = shipped_config("flux2-vae").replace(force_upcast=True)
    assert VAEConfig.from_json(flux2.to_json()) == flux2 and json.loads(flux2.to_json())["patch_size"] == [2, 2]


def test_the_largest_allowed_config_builds():
    """LIMITS are consistent with each other (shipped configs within them: test_shipped_config_builds)."""
    levels = LIMITS["levels"]
    largest = VAEConfig(
        ch=LIMITS["ch"],
        ch_mult=(1,) + (LIMITS["channels"] // LIMITS["ch"],) * (levels - 1),
        num_res_blocks=LIMITS["num_res_blocks"],
        z_channels=LIMITS["z_channels"],
        embed_dim=LIMITS["embed_dim"],
        attn_resolutions=tuple(256 >> i for i in range(levels)),  # attention at every level
    )
    with torch.device("meta"):
        model = AutoencoderKL(largest)
    assert len(model.decoder.up) == levels and len(model.decoder.up[0].attn) == LIMITS["num_res_blocks"] + 1


def test_json_configs_are_bounded_before_parsing():
    with pytest.raises(ConfigError, match="characters long"):
        VAEConfig.from_json(json.dumps({**TINY, "description": "x" * (1 << 20)}))
    with pytest.raises(ConfigError, match="nested too deeply"):
        VAEConfig.from_json("[" * 30000 + "]" * 30000)


def test_missing_required_key(tmp_path):
    path = tmp_path / "short.yaml"
    path.write_text("ch: 32\nch_mult: [1, 2]\nnum_res_blocks: 1\n")
    with pytest.raises(ConfigError, match="z_channels"):
        load_config(path)


LDM_CONFIG = """\
model:
  base_learning_rate: 1.0e-04
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    scale_factor: 0.18215
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        monitor: val/rec_loss
        ddconfig:
          double_z: true
          z_channels: 4
          resolution: 256
          in_channels: 3
          out_ch: 3
          ch: 128
          ch_mult: [1, 2, 4, 4]
          num_res_blocks: 2
          attn_resolutions: []
          dropout: 0.0
        lossconfig:
          target: torch.nn.Identity
"""


def test_reads_original_ldm_config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(LDM_CONFIG)
    config = load_config(path)
    assert config == VAEConfig(
        ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=4, attn_resolutions=(), embed_dim=4, scaling_factor=0.18215
    )
    assert config == shipped_config("sd-vae-ft-mse")


def test_reads_first_stage_only_ldm_config(tmp_path):
    """CompVis models/first_stage_models/kl-f16/config.yaml: no diffusion model, so no scale."""
    path = tmp_path / "config.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            model:
              target: ldm.models.autoencoder.AutoencoderKL
              params:
                embed_dim: 16
                ddconfig: {double_z: true, z_channels: 16, resolution: 256, in_channels: 3, out_ch: 3,
                           ch: 128, ch_mult: [1, 1, 2, 2, 4], num_res_blocks: 2, attn_resolutions: [16],
                           dropout: 0.0}
            """
        )
    )
    config = load_config(path)
    assert config == shipped_config("kl-f16")
    assert config.scaling_factor is None


def test_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("ch: [32, \nch_mult: {")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "config.yaml"
    with pytest.raises(ConfigError, match="not found") as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_unknown_shipped_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="sd-vae-ft-mse"):
        shipped_config("sd-vae-ft-nope")
