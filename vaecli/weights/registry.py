"""Known models: name -> config and weight files. The data lives in configs/registry.yaml."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from ..config import VAEConfig, shipped_config, shipped_config_names
from ..errors import (
    CheckpointError,
    UnknownModelError,
    VaecliError,
    WeightsNotCachedError,
)

DEFAULT_MODEL = "vaecli-default"  # embedded in the package: works offline, no download


@dataclass(frozen=True)
class WeightFile:
    filename: str
    urls: tuple[str, ...]
    sha256: str | None = None  # None: not pinned; the first download records it beside the file
    sha256_confirmed: bool = False
    md5: str | None = None  # only the LPIPS file, whose published checksum is an md5
    size: int | None = None
    size_confirmed: bool = False  # enforced either way: a wrong size almost always means an error page


@dataclass(frozen=True)
class Entry:
    name: str
    config: str | None  # a shipped config name; None for non-VAE files (LPIPS, VGG)
    files: tuple[WeightFile, ...]
    layout: str = "ldm"
    license: str = ""
    gated: bool = False
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False)


def cache_dir() -> Path:
    """VAECLI_CACHE, else $XDG_CACHE_HOME/vaecli, else ~/.cache/vaecli."""
    if os.environ.get("VAECLI_CACHE"):
        return Path(os.environ["VAECLI_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "vaecli"


@lru_cache(maxsize=1)
def load_registry() -> dict[str, Entry]:
    text = (resources.files("vaecli.configs") / "registry.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    entries = {}
    for name, e in (data.get("models") or {}).items():
        files = tuple(
            WeightFile(
                filename=f["filename"],
                urls=tuple(f.get("urls") or ([f["url"]] if f.get("url") else [])),
                sha256=f.get("sha256"),
                sha256_confirmed=bool(f.get("sha256_confirmed", False)),
                md5=f.get("md5"),
                size=f.get("size"),
                size_confirmed=bool(f.get("size_confirmed", False)),
            )
            for f in e.get("files", [])
        )
        known = {"config", "files", "layout", "license", "gated", "description"}
        entries[name] = Entry(
            name=name,
            config=e.get("config"),
            files=files,
            layout=e.get("layout", "ldm"),
            license=e.get("license", ""),
            gated=bool(e.get("gated", False)),
            description=e.get("description", ""),
            extra={k: v for k, v in e.items() if k not in known},
        )
    return entries


def get_entry(name: str) -> Entry:
    entries = load_registry()
    if name == DEFAULT_MODEL:
        raise UnknownModelError(f"{DEFAULT_MODEL} is embedded in the package, not a registry download")
    if name not in entries:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join([DEFAULT_MODEL, *entries])}")
    return entries[name]


def config_only_names() -> dict[str, list[str]]:
    """Shipped configs that no registry entry is named after (kl-f4, kl-f16, kl-f32, sd3-vae) -> the entries
    whose weights fit them (none for CompVis' kl-f*: their weights are pickles, not published as files here).

    Such a name is a model for `--model NAME --weights FILE`; alone it has no weights to load.
    """
    entries = load_registry()
    return {name: [n for n, e in entries.items() if e.config == name] for name in shipped_config_names() if name not in entries}


def no_weights_message(name: str) -> str:
    """Why a config-only name cannot run alone, and what to give instead."""
    users = config_only_names()[name]
    fetch = f"; or use {' / '.join(users)} (vaecli fetch-weights {users[0]})" if users else ""
    return (f"model {name!r} is a shipped config with no weights published for it: give its weights file too, "
            f"--model {name} --weights FILE (--allow-pickle for a CompVis .ckpt){fetch}")


def default_weights_path() -> Path:
    return Path(str(resources.files("vaecli.assets") / f"{DEFAULT_MODEL}.safetensors"))


def embedded_weights_path() -> Path:
    """The embedded default model's file; raises when the package lacks it (a broken install)."""
    path = default_weights_path()
    if not path.is_file():
        raise WeightsNotCachedError(f"the embedded default model is missing from the package ({path})")
    return path


def model_config(name: str) -> VAEConfig:
    if name == DEFAULT_MODEL:
        from .checkpoints import config_from_weights

        path = embedded_weights_path()
        cfg = config_from_weights(path)
        if cfg is None:
            raise CheckpointError(f"{path}: the embedded default model carries no vaecli config")
        return cfg
    if name in config_only_names():
        return shipped_config(name)
    entry = get_entry(name)
    if entry.config is None:
        raise UnknownModelError(f"{name!r} is not an autoencoder (it holds {entry.description or 'other weights'})")
    return shipped_config(entry.config)


def cached_file(name: str, wf: WeightFile, root: str | Path | None = None) -> Path:
    """Where a model's file lives in the cache: <root>/<model name>/<file name>."""
    return (Path(root).expanduser() if root is not None else cache_dir()) / name / wf.filename


def custom_entry(name: str, url: str, sha256: str | None = None) -> Entry:
    """A user-given URL handled like a registry entry; unpinned when `sha256` is None."""
    if not name or "/" in name or name.startswith("."):
        raise VaecliError(f"--name {name!r}: give a plain name for the cache folder")
    if sha256 is not None and re.fullmatch(r"[0-9a-fA-F]{64}", sha256) is None:
        raise VaecliError(f"--sha256 {sha256!r}: expected 64 hexadecimal digits")
    filename = Path(urlsplit(url).path).name
    if not filename:
        raise VaecliError(f"--url {url}: the URL path names no file")
    wf = WeightFile(filename=filename, urls=(url,), sha256=sha256.lower() if sha256 else None, sha256_confirmed=sha256 is not None)
    return Entry(name=name, config=None, files=(wf,), layout="unknown", description=f"custom download from {url}")
