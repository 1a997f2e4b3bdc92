"""The networks: latent-diffusion's autoencoder modules (parameter names byte-identical) and AutoencoderKL.

The seed modules live here too: the U-Net `Model` (unet.py), ActNorm and the LU 1x1 convolution
(flows.py) and the PatchGAN discriminator (discriminator.py), none of which the commands run.
"""

from .attention import AttnBlock, LinAttnBlock, MemoryEfficientAttnBlock, make_attn
from .autoencoder_kl import AutoencoderKL
from .blocks import Downsample, ResnetBlock, Upsample
from .discriminator import NLayerDiscriminator
from .distributions import DiagonalGaussianDistribution, DiracDistribution, normal_kl
from .encoder_decoder import Decoder, Encoder
from .flows import ActNorm, Invertible1x1Conv
from .normalization import Normalize, nonlinearity
from .unet import Model, get_timestep_embedding

__all__ = [
    "ActNorm",
    "AttnBlock",
    "AutoencoderKL",
    "Decoder",
    "DiagonalGaussianDistribution",
    "DiracDistribution",
    "Downsample",
    "Encoder",
    "Invertible1x1Conv",
    "LinAttnBlock",
    "MemoryEfficientAttnBlock",
    "Model",
    "NLayerDiscriminator",
    "Normalize",
    "ResnetBlock",
    "Upsample",
    "get_timestep_embedding",
    "make_attn",
    "nonlinearity",
    "normal_kl",
]
