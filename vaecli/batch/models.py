"""Which model a job runs on, what identifies it in a recipe, and how the memory budget is shared with the data.

A model is identified by content, not by path: its registry name, the sha256 of its weights file
(cached on size and mtime, so a fine-tune saved over the old file is a new model) and of a --config
file. Decode takes the model a latent names from its metadata, loaded through api.load_vae (which
checks configs and weights files) once per distinct model.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import VAEConfig
from ..errors import InputError, UnknownModelError, VaecliError, WeightsNotCachedError
from ..io.hashing import DigestCache
from ..io.latents import LatentHeader
from ..model import AutoencoderKL
from ..runtime.executor import Runner
from ..runtime.memory import MemoryPolicy, memory_budget
from ..weights import registry
from ..weights.locate import locate
from .freshness import model_identity

DATA_SHARE = 4  # 1/4 of the memory budget holds inputs read ahead and outputs being written; the model gets the rest
DIGEST_CACHE_FILE = "sha256-cache.json"


def dtype_name(dtype: torch.dtype) -> str:
    """How a recipe records the compute dtype: "float32", "float16", "bfloat16"."""
    return str(dtype).removeprefix("torch.")


def digest_cache() -> DigestCache:
    """Weights digests remembered in the vaecli cache folder."""
    return DigestCache(registry.cache_dir() / DIGEST_CACHE_FILE)


@dataclass(frozen=True)
class ModelFlags:
    """The model as the command line names it: --model, --config, --weights (all None: the embedded default)."""

    model: str | None = None
    config: Path | None = None
    weights: Path | None = None

    @property
    def recorded_name(self) -> str | None:
        """The model name a latent records so decode can reload it from anywhere (a registry name, a repository
        id, a diffusers folder's absolute path, not the string typed); None for a model given by files."""
        if self.model is None:
            return None if (self.config or self.weights) else registry.DEFAULT_MODEL
        try:
            folder = locate(self.model, verify=False).kind == "folder"
        except UnknownModelError:  # a shipped config's name, with --weights FILE (--model kl-f4)
            return self.model
        return str(Path(self.model).expanduser().resolve()) if folder else self.model

    def identity(self, digests: DigestCache) -> dict:
        name = None if self.model is None else self.recorded_name
        if self.weights:
            return model_identity(name, Path(self.weights), self.config, digests)
        weights, config_json = model_files(self.model or registry.DEFAULT_MODEL)
        return model_identity(name, weights, self.config or config_json, digests)


def model_files(name: str) -> tuple[Path, Path | None]:
    """The weights file and the config.json (of a repository or folder; None for a registry model) that
    a model name stands for, found where api.load_vae finds them (unchecked: they are hashed for the recipe)."""
    found = locate(name, verify=False)
    if not found.found:
        raise WeightsNotCachedError(f"weights for {name} are not cached; run: {found.fetch}")
    return found.weights, found.config_file


def resident_bytes() -> int:
    """This process's resident memory now (Linux /proc/self/statm); 0 where unknown."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def memory_split(max_memory: int | None, device: torch.device) -> tuple[int | None, int]:
    """(bytes for the model's policy, bytes for the data in flight) under --max-memory.

    On a CPU --max-memory bounds the process: what is resident already (torch, the weights) is taken
    out, the data gets 1/4 of the rest and the model 3/4 (never less than a quarter of --max-memory
    between them). Without --max-memory the default budget is of the memory still available. On a
    GPU --max-memory is device memory and the data lives in host RAM: the model keeps it all, the
    data gets 1/4 of the host's default budget.
    """
    host = memory_budget(torch.device("cpu"))
    if torch.device(device).type != "cpu":
        return max_memory, host // DATA_SHARE
    total = host if max_memory is None else max(max_memory - resident_bytes(), max_memory // DATA_SHARE)
    return total - total // DATA_SHARE, total // DATA_SHARE


def make_runner(vae: AutoencoderKL, max_memory: int | None) -> tuple[Runner, int]:
    """A Runner under its share of --max-memory, and the data budget that goes with it."""
    model_bytes, data_bytes = memory_split(max_memory, next(vae.parameters()).device)
    return Runner(vae, MemoryPolicy(model_bytes)), data_bytes


@dataclass(frozen=True)
class ModelRequest:
    key: tuple  # which loaded model (cache key)
    identity: dict  # recorded in the recipe of what it decodes


class ModelSource:
    """The model that decodes a latent: the one given by flags, else the one its metadata names (each loaded once)."""

    def __init__(self, given: Runner | None, given_identity: dict | None, load: Callable[..., Runner], digests: DigestCache):
        self.given, self.given_identity = given, given_identity
        self.load = load  # api.load_vae with the run's device, dtype and memory bound, wrapped in a Runner
        self.digests = digests
        self.cache: dict[tuple, Runner] = {}

    def request(self, header: LatentHeader, path: Path) -> ModelRequest:
        if self.given is not None:
            return ModelRequest(("given",), self.given_identity or {})
        meta = header.meta
        if meta is None:
            raise InputError(f"{path}: not a vaecli latent; say which model made it with --model or --config/--weights")
        try:
            if meta.weights is not None:
                weights = Path(meta.weights)
                if not weights.is_file():
                    raise InputError(f"{path}: the weights it was made with ({weights}) are gone; pass --weights or --model")
                return ModelRequest(("weights", str(weights), meta.config), {"from_latent": True, "weights_sha256": self.digests.sha256(weights)})
            if meta.model:
                weights, config_json = model_files(meta.model)
                return ModelRequest(("model", meta.model), model_identity(meta.model, weights, config_json, self.digests))
        except InputError:
            raise
        except (VaecliError, OSError) as e:
            raise InputError(f"{path}: cannot use the model it names: {e}") from None
        raise InputError(f"{path}: its metadata names no model or weights; pass --model or --weights")

    def get(self, request: ModelRequest, path: Path) -> Runner:
        if request.key == ("given",):
            return self.given
        if request.key not in self.cache:
            try:
                if request.key[0] == "weights":
                    config = VAEConfig.from_json(request.key[2], f"{path} metadata")
                    self.cache[request.key] = self.load(config=config, weights=request.key[1])
                else:
                    self.cache[request.key] = self.load(request.key[1])
            except InputError:
                raise
            except VaecliError as e:
                raise InputError(f"{path}: cannot load its model: {e}") from None
        return self.cache[request.key]
