"""vaecli's AutoencoderKL against diffusers' AutoencoderKL (the independent reference), same weights.

Weights travel both ways: diffusers' own random model saved in diffusers layout and read by our
loader, and our model's ldm-layout state dict read by diffusers' own ldm converter. Any swapped
block, missed rename, wrong pad or wrong scale shows up as a mismatch.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from vaecli.config import VAEConfig
from vaecli.weights.checkpoints import load_weights
from vaecli.weights.keymap import diffusers_vae_kwargs

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint  # noqa: E402

REL_TOL = 1e-4

CASES = {
    # SD-like: quant convs, 4 latent channels, no shift
    "sd-like": VAEConfig(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, z_channels=4, embed_dim=4, scaling_factor=0.18215),
    # FLUX-like: 16 latent channels, no quant convs, a shift factor, two resnets per level
    "flux-like": VAEConfig(
        ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=2, z_channels=16, embed_dim=None, scaling_factor=0.3611, shift_factor=0.1159
    ),
    # diffusers' norm_num_groups: 8 groups of 4-8 channels, as the embedded default model uses
    "groups-8": VAEConfig(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, z_channels=8, norm_num_groups=8, embed_dim=None),
}
SIZES = [(40, 72), (88, 24)]  # (H, W): multiples of 8, not of 64, non-square


def random_diffusers(c: VAEConfig, seed: int = 0):
    torch.manual_seed(seed)
    ref = diffusers.AutoencoderKL(**diffusers_vae_kwargs(c)).eval()
    with torch.no_grad():  # default init leaves GroupNorm at 1/0: perturb every tensor so all of them matter
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return ref


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def assert_matches(ours, ref, c: VAEConfig, size):
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        post, ref_post = ours.encode(x), ref.encode(x).latent_dist
        assert post.mean.shape == (2, c.latent_channels, size[0] // 8, size[1] // 8)
        assert rel_err(post.mean, ref_post.mean) < REL_TOL
        assert rel_err(post.logvar, ref_post.logvar) < REL_TOL
        z = ref_post.mean
        assert rel_err(ours.decode(z), ref.decode(z).sample) < REL_TOL
        # the latent convention: scaling_factor * (z - shift_factor), as diffusers' pipelines apply it
        ref_scaled = (z - ref.config.shift_factor) * ref.config.scaling_factor
        assert rel_err(ours.scale_latents(z), ref_scaled) < 1e-6
        assert rel_err(ours.unscale_latents(ref_scaled), z) < 1e-6


@pytest.mark.parametrize("case", CASES)
def test_loads_diffusers_layout_and_matches(case, tmp_path):
    c = CASES[case]
    ref = random_diffusers(c)
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    ours = load_weights(c, path)
    for size in SIZES:
        assert_matches(ours, ref, c, size)


@pytest.mark.parametrize("case", CASES)
def test_loads_ldm_layout_and_matches(case, tmp_path):
    """Our ldm-named weights, wrapped as in an SD checkpoint, read by diffusers' own ldm converter."""
    c = CASES[case]
    torch.manual_seed(2)
    ours_src = load_weights(c, _save_random_ldm(c, tmp_path / "src.safetensors"))
    ckpt = {f"first_stage_model.{k}": v for k, v in ours_src.state_dict().items()}
    ckpt["loss.logvar"] = torch.zeros(())  # training leftovers that loaders must drop
    ckpt["model_ema.decay"] = torch.tensor(0.999)
    path = tmp_path / "sd-checkpoint.safetensors"
    save_file(ckpt, str(path))

    ours = load_weights(c, path)
    ref = diffusers.AutoencoderKL(**diffusers_vae_kwargs(c)).eval()
    converted = convert_ldm_vae_checkpoint({k: v.clone() for k, v in ckpt.items()}, dict(ref.config))
    ref.load_state_dict(converted, strict=True)
    for size in SIZES:
        assert_matches(ours, ref, c, size)


def _save_random_ldm(c: VAEConfig, path):
    from vaecli.model import AutoencoderKL
    from vaecli.weights.checkpoints import save_weights

    model = AutoencoderKL(c)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_weights(model, path)
    return path


def test_legacy_diffusers_attention_names(tmp_path):
    """Older diffusers files name the mid attention query/key/value/proj_attn."""
    c = CASES["sd-like"]
    ref = random_diffusers(c, seed=3)
    legacy = {}
    for k, v in ref.state_dict().items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            k = k.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
        legacy[k] = v.contiguous()
    assert any(".query." in k for k in legacy)
    path = tmp_path / "legacy.safetensors"
    save_file(legacy, str(path))
    assert_matches(load_weights(c, path), ref, c, SIZES[0])


def test_loads_into_target_dtype(tmp_path):
    c = CASES["sd-like"]
    ref = random_diffusers(c, seed=4)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    ours = load_weights(c, path, dtype=torch.bfloat16)
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in ours.parameters())
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        got = ours.decode(ours.encode(x.bfloat16()).mode()).float()
        want = ref.decode(ref.encode(x).latent_dist.mode()).sample
    assert rel_err(got, want) < 0.05  # bf16 keeps ~3 significant digits through the network
