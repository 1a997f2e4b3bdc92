"""Weights: checkpoint formats and key layouts, the model registry, and the downloader (the only network use)."""
