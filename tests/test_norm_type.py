"""norm_type "affine": GroupNorms with fixed statistics, so encoder and decoder compute each pixel from
its neighbourhood alone and nothing depends on the image's size (issue 15)."""

from __future__ import annotations

import pytest
import torch
from reference_models import random_vaecli

from vaecli.config import VAEConfig
from vaecli.model import AutoencoderKL
from vaecli.model.normalization import ChannelAffine, GroupNorm
from vaecli.weights.keymap import diffusers_vae_kwargs

GEOMETRY = dict(ch=32, ch_mult=(2, 1, 2), num_res_blocks=1, z_channels=8, norm_num_groups=8, attn_type="none")


def _model(norm_type: str) -> AutoencoderKL:
    return random_vaecli(VAEConfig(**GEOMETRY, norm_type=norm_type), norm_weight=(0.5, 1.5), norm_bias=(0.0, 0.3))


def test_folded_statistics_are_group_norm_for_an_input_with_those_statistics():
    torch.manual_seed(0)
    norm = GroupNorm(num_groups=4, num_channels=16, eps=1e-6, affine=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_(0.0, 0.3)
    x = torch.randn(1, 16, 9, 7, dtype=torch.float64) * torch.linspace(0.2, 3, 16).view(1, 16, 1, 1) + 2.0  # groups of unequal spread
    var, mean = torch.var_mean(x.reshape(1, 4, -1), dim=-1, correction=0)  # (1, 4)
    affine = ChannelAffine.fold_statistics(norm, mean[0], var[0]).double()
    torch.testing.assert_close(affine(x), norm.double()(x), rtol=0, atol=1e-6)  # the affine parameters are float32
    # another input with other statistics: GroupNorm follows them, the affine map does not
    assert not torch.allclose(affine(x + 1), norm(x + 1))


@pytest.mark.parametrize("norm_type", ["affine", "group"])
def test_a_region_does_not_depend_on_the_rest_of_the_image(norm_type):
    """Encode an image and its left half, decode a latent and its left half: with fixed statistics the
    values away from the cut (beyond the receptive field: about 13 latent pixels for the decoder, 9
    for the encoder here) are the same; with GroupNorm the right half's content changes every
    position's normalisation, so they are not."""
    vae = _model(norm_type)
    torch.manual_seed(1)
    z = torch.randn(1, 8, 24, 64)
    z[:, :, :, 32:] = z[:, :, :, 32:] * 3 + 1  # the right half unlike the left, as another part of a photo is
    x = torch.rand(1, 3, 96, 256) * 2 - 1
    x[:, :, :, 128:] = x[:, :, :, 128:] * 0.2 + 0.5
    with torch.inference_mode():
        decoded, decoded_half = vae.decode(z), vae.decode(z[:, :, :, :32].contiguous())
        encoded, encoded_half = vae.encode(x).mean, vae.encode(x[:, :, :, :128].contiguous()).mean
    keep = (32 - 16) * vae.downsample_factor  # image columns at least 16 latent pixels from the cut
    decoder_diff = (decoded[..., :keep] - decoded_half[..., :keep]).abs().max().item()
    encoder_diff = (encoded[..., :16] - encoded_half[..., :16]).abs().max().item()
    if norm_type == "affine":
        assert decoder_diff < 1e-5 and encoder_diff < 1e-5
    else:
        assert decoder_diff > 1e-2 and encoder_diff > 1e-2


def test_affine_norms_keep_the_group_norm_parameter_names():
    """Same state-dict keys and shapes as latent-diffusion's: weights load by name either way."""
    group, affine = (AutoencoderKL(VAEConfig(**GEOMETRY, norm_type=n)).state_dict() for n in ("group", "affine"))
    assert {k: v.shape for k, v in group.items()} == {k: v.shape for k, v in affine.items()}


def test_affine_norms_have_no_diffusers_twin():
    with pytest.raises(ValueError, match="no equivalent"):
        diffusers_vae_kwargs(VAEConfig(**GEOMETRY, norm_type="affine"))
