"""The seed modules of latent-diffusion's autoencoder, with its parameter names kept byte-identical."""

from .attention import AttnBlock, LinAttnBlock, MemoryEfficientAttnBlock, make_attn
from .autoencoder import (
    Decoder,
    Downsample,
    Encoder,
    Model,
    Normalize,
    ResnetBlock,
    Upsample,
    get_timestep_embedding,
    nonlinearity,
)
from .distributions import DiagonalGaussianDistribution, DiracDistribution, normal_kl
from .discriminator import NLayerDiscriminator
from .flows import ActNorm, Invertible1x1Conv

__all__ = [
    "ActNorm",
    "AttnBlock",
    "Decoder",
    "DiagonalGaussianDistribution",
    "DiracDistribution",
    "Downsample",
    "Encoder",
    "Invertible1x1Conv",
    "LinAttnBlock",
    "MemoryEfficientAttnBlock",
    "NLayerDiscriminator",
    "Model",
    "Normalize",
    "ResnetBlock",
    "Upsample",
    "get_timestep_embedding",
    "make_attn",
    "nonlinearity",
    "normal_kl",
]
