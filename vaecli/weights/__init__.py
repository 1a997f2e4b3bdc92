"""Weights: checkpoint formats and key layouts, the model registry, and the downloader (the only network use).

Submodules and `save_weights`/`load_weights` are imported on first use, so `vaecli fetch-weights`
does not load torch and `vaecli.weights.checkpoints` works after a bare `import vaecli`.
"""

import importlib

_SUBMODULES = ("checkpoints", "download", "keymap", "registry")
_FUNCTIONS = {"save_weights": "checkpoints", "load_weights": "checkpoints", "config_from_weights": "checkpoints"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(f".{_FUNCTIONS[name]}", __name__), name)
    raise AttributeError(f"module 'vaecli.weights' has no attribute {name!r}")
