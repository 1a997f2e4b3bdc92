"""vaecli: the KL autoencoders of latent diffusion, from the command line and from Python.

    import vaecli
    vae = vaecli.load_vae("sd-vae-ft-mse")            # or load_vae(weights="my.safetensors")
    posterior = vae.encode(pixels)                    # pixels: (B, 3, H, W) in [-1, 1]
    latents = vae.scale_latents(posterior.mode())     # what the diffusion model sees
    images = vae.decode(vae.unscale_latents(latents))
"""

__version__ = "0.1.0"

# Imported on first use (PEP 562), so `vaecli --help` answers without loading torch.
_LAZY = {
    "VAEConfig": ".config",
    "load_config": ".config",
    "pick_device": ".device",
    "resolve_dtype": ".device",
    "VaecliError": ".errors",
    "load_vae": ".loading",
    "DiagonalGaussianDistribution": ".nn.distributions",
    "AutoencoderKL": ".vae",
    "tiled_encode": ".tiling",
    "tiled_decode": ".tiling",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'vaecli' has no attribute {name!r}")

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
    "tiled_decode",
    "tiled_encode",
]
