"""Where a model's weights are found: in the package, vaecli's cache, the Hugging Face cache, or a folder.

A model is named as a registry name, a repository `ORG/REPO[/SUBFOLDER]`, or a diffusers folder on
disk. vaecli's own cache is looked at first (its files were verified when downloaded), then the
Hugging Face cache, whose files are used in place, after checking them: against the registry's
pinned sha256 where there is one, else against the hash the cache names each blob by. Nothing is
downloaded here; a model found nowhere raises with the exact fetch command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import VAEConfig
from ..errors import UnknownModelError, WeightsNotCachedError
from ..io.hashing import file_digest
from . import registry
from .diffusers_config import load_diffusers_config
from .hf_cache import HubFile, find_file, hub_cache_dir, parse_hub_url, verify_hub_file
from .repos import (
    CONFIG_NAME,
    RepoRef,
    folder_weights,
    is_diffusers_folder,
    weights_names,
)

# Where weights were found (Found.source).
PACKAGE, VAECLI_CACHE, HF_CACHE, FOLDER = "package", "vaecli-cache", "hf-cache", "folder"


@dataclass(frozen=True)
class Found:
    """The answer for one model name: what kind of name it is, and where its files are (if anywhere)."""

    model: str  # as given
    kind: str  # "registry" (the embedded default included), "repo" or "folder"
    source: str | None  # PACKAGE, VAECLI_CACHE, HF_CACHE or FOLDER; None: not found
    weights: Path | None = None
    config_file: Path | None = None  # a diffusers config.json (repositories and folders)
    sha256: str | None = None  # the weights' sha256 when checked by this call (Hugging Face cache)
    fetch: str | None = None  # the command that downloads what is missing

    @property
    def found(self) -> bool:
        return self.source is not None


def hub_cached_copy(wf: registry.WeightFile) -> HubFile | None:
    """The Hugging Face cache's copy of a registry file, found by its download URL; unchecked."""
    for url in wf.urls:
        where = parse_hub_url(url)
        if where is not None:
            repo_id, revision, path_in_repo = where
            hub = find_file(repo_id, path_in_repo, revision)
            if hub is not None:
                return hub
    return None


def _registry(name: str, verify: bool, sha256_of: Callable[[Path], str]) -> Found:
    if name == registry.DEFAULT_MODEL:
        return Found(name, "registry", PACKAGE, registry.embedded_weights_path())
    entry = registry.get_entry(name)
    wf = entry.files[0]
    own = registry.cached_file(name, wf)
    if own.is_file():
        return Found(name, "registry", VAECLI_CACHE, own)
    hub = hub_cached_copy(wf)
    if hub is not None:
        sha = verify_hub_file(hub, wf.sha256, sha256_of) if verify else None
        return Found(name, "registry", HF_CACHE, hub.path, sha256=sha)
    return Found(name, "registry", None, fetch=f"vaecli fetch-weights {name}")


def in_hub_cache(ref: RepoRef, verify: bool = True, sha256_of: Callable[[Path], str] = file_digest) -> Found:
    """A repository folder's config.json and weights in the Hugging Face cache (checked with `verify`)."""
    model = str(ref)
    config = find_file(ref.repo_id, ref.path_in_repo(CONFIG_NAME))
    weights = next((f for n in weights_names() if (f := find_file(ref.repo_id, ref.path_in_repo(n)))), None)
    if config is not None and weights is not None:
        sha = None
        if verify:
            verify_hub_file(config)
            sha = verify_hub_file(weights, sha256_of=sha256_of)
        return Found(model, "repo", HF_CACHE, weights.path, config.path, sha)
    return Found(model, "repo", None, fetch=f"vaecli fetch-weights {model}")


def _repo(ref: RepoRef, verify: bool, sha256_of: Callable[[Path], str]) -> Found:
    own = ref.cache_folder(registry.cache_dir())
    if is_diffusers_folder(own) and any((own / n).is_file() for n in weights_names()):
        return Found(str(ref), "repo", VAECLI_CACHE, folder_weights(own), own / CONFIG_NAME)
    return in_hub_cache(ref, verify, sha256_of)


def locate(model: str, *, verify: bool = True, sha256_of: Callable[[Path], str] = file_digest) -> Found:
    """Where `model`'s weights are. With `verify`, a Hugging Face cache file is hashed (by `sha256_of`) and
    refused (CheckpointError) when corrupt or a broken link; without, nothing is read but directory entries.

    Raises UnknownModelError for a name that is no registry model, folder or repository id.
    """
    if model == registry.DEFAULT_MODEL or model in registry.load_registry():
        return _registry(model, verify, sha256_of)
    path = Path(model).expanduser()
    if path.is_dir():
        if not is_diffusers_folder(path):
            raise UnknownModelError(f"--model {model}: a folder without {CONFIG_NAME}, so not a diffusers model folder")
        return Found(model, "folder", FOLDER, folder_weights(path), path / CONFIG_NAME)
    ref = RepoRef.parse(model)
    if ref is None:
        known = ", ".join([registry.DEFAULT_MODEL, *(n for n, e in registry.load_registry().items() if e.config), *registry.config_only_names()])
        raise UnknownModelError(f"unknown model {model!r}: not a registry model ({known}), a diffusers folder, or ORG/REPO[/SUBFOLDER]")
    return _repo(ref, verify, sha256_of)


def _missing(found: Found) -> WeightsNotCachedError:
    places = f"vaecli's cache ({registry.cache_dir()}) or the Hugging Face cache ({hub_cache_dir()})"
    folder = " (nor is there a folder of that name here)" if found.kind == "repo" else ""
    return WeightsNotCachedError(f"weights for {found.model} are not in {places}{folder}; run: {found.fetch}")


def resolve_model(model: str) -> tuple[VAEConfig, Path]:
    """The config and weights file `model` names, checked; raises with the fetch command when missing."""
    if model in registry.config_only_names():
        raise WeightsNotCachedError(registry.no_weights_message(model))
    found = locate(model)
    if not found.found:
        raise _missing(found)
    return model_config(model, found), found.weights


def model_config(model: str, found: Found | None = None) -> VAEConfig:
    """The config of a registry model (its shipped config), or of a repository or folder (its config.json)."""
    if model == registry.DEFAULT_MODEL or model in registry.load_registry() or model in registry.config_only_names():
        cfg = registry.model_config(model)
    else:
        found = found or locate(model)
        if found.config_file is None:
            raise _missing(found)
        cfg = load_diffusers_config(found.config_file)
    return cfg if cfg.name is not None else cfg.replace(name=model)
