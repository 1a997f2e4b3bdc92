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
    "pick_device": ".runtime.device",
    "resolve_dtype": ".runtime.device",
    "VaecliError": ".errors",
    "load_vae": ".api",
    "DiagonalGaussianDistribution": ".model",
    "AutoencoderKL": ".model",
    "tiled_encode": ".runtime.tiling",
    "tiled_decode": ".runtime.tiling",
}
# Subpackages reachable as attributes after a bare `import vaecli`; `nn` and `checkpoints` are the
# names the seed modules and the weights loader had in vaecli 0.1.
_SUBMODULES = {
    "api": ".api",
    "batch": ".batch",
    "cli": ".cli",
    "config": ".config",
    "errors": ".errors",
    "io": ".io",
    "model": ".model",
    "quality": ".quality",
    "runtime": ".runtime",
    "stats": ".stats",
    "weights": ".weights",
    "nn": ".model",
    "checkpoints": ".weights.checkpoints",
}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name], __name__)
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
