"""Shared fixtures: tiny random models that build and run in well under a second on a CPU."""

from __future__ import annotations

import pytest
import torch

from vaecli.config import VAEConfig
from vaecli.model import AutoencoderKL
from vaecli.weights.checkpoints import save_weights


@pytest.fixture(autouse=True, scope="session")
def _own_hub_cache(tmp_path_factory):
    """No test sees the developer's own Hugging Face cache: what is "cached" must not depend on the machine.

    Set in os.environ, so the CLI subprocesses the tests start inherit it too.
    """
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hf-hub-cache")))
    patch.delenv("HF_HOME", raising=False)
    yield
    patch.undo()


# Two levels (downsample factor 2), one resnet per level, 32 channels: the smallest model that still
# has every part of the real architecture (down/upsample, mid attention, quant convs).
TINY_CONFIG = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, embed_dim=4, scaling_factor=0.5, name="tiny")


@pytest.fixture
def tiny_config() -> VAEConfig:
    return TINY_CONFIG


@pytest.fixture
def tiny_model(tiny_config) -> AutoencoderKL:
    """A randomly initialised tiny model, seeded so every test sees the same weights."""
    torch.manual_seed(0)
    return AutoencoderKL(tiny_config).eval()


@pytest.fixture
def tiny_weights(tmp_path, tiny_model):
    """The tiny model saved by save_weights as a self-describing safetensors file."""
    path = tmp_path / "tiny.safetensors"
    save_weights(tiny_model, path)
    return path


# --- CLI / pipeline fixtures (issue 3) ---------------------------------------------------------------

# Four levels (downsample factor 8, as the real models) so padding to a multiple is exercised and the
# mid-block attention stays cheap on a 517x301 image; a shift factor so the scaling convention is
# checked in full, not just a multiplication.
CLI_CONFIG = VAEConfig(
    ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, z_channels=4, embed_dim=4, scaling_factor=0.5, shift_factor=0.1, name="tiny-f8"
)


@pytest.fixture(scope="session")
def cli_weights(tmp_path_factory):
    """A self-describing tiny f8 model file shared by the CLI tests (built once per session)."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("cli-model") / "tiny-f8.safetensors"
    save_weights(AutoencoderKL(CLI_CONFIG).eval(), path)
    return path
