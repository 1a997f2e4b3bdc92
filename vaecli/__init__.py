"""vaecli: the KL autoencoders of latent diffusion, from the command line and from Python.

    import vaecli
    vae = vaecli.load_vae("sd-vae-ft-mse")            # or load_vae(weights="my.safetensors")
    posterior = vae.encode(pixels)                    # pixels: (B, 3, H, W) in [-1, 1]
    latents = vae.scale_latents(posterior.mode())     # what the diffusion model sees
    images = vae.decode(vae.unscale_latents(latents))
"""

__version__ = "0.1.0"

from .config import VAEConfig, load_config
from .device import pick_device, resolve_dtype
from .errors import VaecliError
from .loading import load_vae
from .nn.distributions import DiagonalGaussianDistribution
from .vae import AutoencoderKL

__all__ = [
    "AutoencoderKL",
    "DiagonalGaussianDistribution",
    "VAEConfig",
    "VaecliError",
    "__version__",
    "load_config",
    "load_vae",
    "pick_device",
    "resolve_dtype",
]
