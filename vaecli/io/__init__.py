"""Reading and writing files: atomic writes, images, video, latent files."""
