"""The model config: one dataclass, read from our YAML schema or from an original LDM/sgm config.yaml.

Our schema's keys are the Encoder/Decoder keyword arguments of latent-diffusion, byte-identical, plus
`embed_dim` (null: no quant convs, as in SD3/FLUX) and the latent convention `scaling_factor` and
`shift_factor`. Configs are validated when built, so a bad value fails with the key's name before
any tensor is allocated.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from .errors import ConfigError

ATTN_TYPES = ("vanilla", "vanilla-xformers", "linear", "none")
NORM_TYPES = ("group", "affine")
DESCRIPTIVE_KEYS = ("name", "description")  # allowed in our YAML, not part of the architecture
# Keys added after latents were first written. A latent's recipe holds its config as JSON, so these are
# left out at their defaults: the JSON of every earlier config, and so every earlier latent, stays valid.
LATER_KEYS = MappingProxyType({"force_upcast": False, "patch_size": None, "batch_norm_eps": None, "norm_type": "group"})

# Upper bounds on the architecture. Configs come from files other people send (latent metadata,
# self-describing weights), so a value must not be able to make building the model take minutes or
# exhaust memory. Every published model (REFERENCE.md section 1: at most 6 levels, ch 128, widest 512
# channels, 2 res blocks, z 64) fits with headroom, and the largest config allowed (8 levels, 8 res
# blocks, attention at every level) builds on the meta device in 0.5 s on a busy 2-core machine,
# against 0.06 s for SD's VAE (scripts/bench_config_limits.py).
LIMITS = MappingProxyType({
    "ch": 512,
    "channels": 2048,  # ch * ch_mult[i], the widest level
    "levels": 8,  # len(ch_mult): downsample factor up to 128
    "num_res_blocks": 8,
    "z_channels": 256,
    "embed_dim": 256,
    "in_channels": 64,
    "out_ch": 64,
    "resolution": 65536,
    "attn_resolutions": 8,  # entries
    "patch": 8,  # patch_size per axis; FLUX.2 uses 2
})
MAX_JSON_CHARS = 64 << 10  # a config as JSON is well under 1 KiB; metadata can be made of anything


@dataclass(frozen=True)
class VAEConfig:
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    z_channels: int
    attn_resolutions: tuple[int, ...] = ()
    double_z: bool = True  # encoder emits mean and logvar: 2 * z_channels
    in_channels: int = 3
    out_ch: int = 3
    resolution: int = 256  # training resolution; attn_resolutions are read against it
    dropout: float = 0.0
    attn_type: str = "vanilla"
    norm_num_groups: int = 32  # GroupNorm groups (diffusers' name); every published model uses 32
    embed_dim: int | None = None  # None: no quant_conv/post_quant_conv (SD3, FLUX)
    scaling_factor: float | None = None  # None: the model publishes none; latents stay unscaled
    shift_factor: float = 0.0
    force_upcast: bool = False  # diffusers' flag: the model overflows in float16, so dtype "auto" never picks it
    patch_size: tuple[int, ...] | None = None  # FLUX.2: the transformer sees 2x2-patchified latents...
    batch_norm_eps: float | None = None  # ...normalised by a BatchNorm's running statistics with this eps
    # vaecli's own: "affine", the GroupNorms of encoder and decoder with fixed statistics (a per-channel scale and
    # shift, vaecli.model.normalization.ChannelAffine), so that nothing depends on the image's size; "group":
    # GroupNorm, as every published model
    norm_type: str = "group"
    name: str | None = field(default=None, compare=False)
    description: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for key in ("ch_mult", "attn_resolutions", "patch_size"):
            value = getattr(self, key)
            if value is None and key == "patch_size":
                continue
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{key}={_shown(value)}: must be a list of integers")
            object.__setattr__(self, key, tuple(value))
        _validate(self)

    @property
    def latent_channels(self) -> int:
        """Channels of the latent the diffusion model sees (after quant_conv when present)."""
        return self.embed_dim if self.embed_dim is not None else self.z_channels

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent cell along each axis: 8 for SD/SDXL/SD3/FLUX."""
        return 2 ** (len(self.ch_mult) - 1)

    def ddconfig(self) -> dict[str, Any]:
        """Keyword arguments shared by Encoder and Decoder, named as latent-diffusion names them."""
        return {
            "ch": self.ch,
            "out_ch": self.out_ch,
            "ch_mult": self.ch_mult,
            "num_res_blocks": self.num_res_blocks,
            "attn_resolutions": self.attn_resolutions,
            "dropout": self.dropout,
            "in_channels": self.in_channels,
            "resolution": self.resolution,
            "z_channels": self.z_channels,
            "double_z": self.double_z,
            "attn_type": self.attn_type,
            "norm_num_groups": self.norm_num_groups,
            "norm_type": self.norm_type,
        }

    def architecture(self) -> dict[str, Any]:
        """What decides the function the model computes: the Encoder/Decoder arguments and embed_dim.

        Dropout acts only in training; "vanilla-xformers" computes what "vanilla" does with other kernels.
        """
        arch = {k: v for k, v in self.ddconfig().items() if k != "dropout"}
        arch["attn_type"] = "vanilla" if self.attn_type == "vanilla-xformers" else self.attn_type
        arch["embed_dim"] = self.embed_dim
        arch["patch_size"] = self.patch_size  # FLUX.2's BatchNorm statistics are part of its weights
        arch["batch_norm_eps"] = self.batch_norm_eps
        return arch

    def architecture_differences(self, other: "VAEConfig") -> list[tuple[str, str, str]]:
        """(key, mine, other's), shown for messages, for each architecture value the two disagree on."""
        mine, theirs = self.architecture(), other.architecture()
        return [(k, _shown(mine[k]), _shown(theirs[k])) for k in mine if mine[k] != theirs[k]]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        d["attn_resolutions"] = list(self.attn_resolutions)
        if self.patch_size is not None:
            d["patch_size"] = list(self.patch_size)
        return {
            k: v
            for k, v in d.items()
            if not (k in DESCRIPTIVE_KEYS and v is None) and not (k in LATER_KEYS and v == LATER_KEYS[k])
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> "VAEConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "VAEConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of config keys, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise ConfigError(f"{source}: missing config key(s) {', '.join(missing)}")
        try:
            return cls(**data)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "metadata") -> "VAEConfig":
        if len(text) > MAX_JSON_CHARS:
            raise ConfigError(f"{source}: config is {len(text)} characters long, more than any real one ({MAX_JSON_CHARS})")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{source}: config is not valid JSON ({e.msg})") from None
        except RecursionError:
            raise ConfigError(f"{source}: config is nested too deeply to be a config") from None
        return cls.from_dict(data, source)


def _shown(value: Any, limit: int = 60) -> str:
    """A value for an error message, cut short: it may come from a file crafted to be huge."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _validate(c: VAEConfig) -> None:
    """Reject values that cannot build a model, or that exceed LIMITS, naming the key."""

    def need(ok: bool, key: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"{key}={_shown(getattr(c, key))}: {why}")

    def count(key: str, limit_key: str | None = None) -> None:
        limit = LIMITS[limit_key or key]
        need(_is_int(getattr(c, key)) and 0 < getattr(c, key) <= limit, key, f"must be a positive integer of at most {limit}")

    count("ch")
    need(_is_int(c.norm_num_groups) and c.norm_num_groups > 0, "norm_num_groups", "must be a positive integer")
    need(c.ch % c.norm_num_groups == 0, "ch", f"must be divisible by norm_num_groups={c.norm_num_groups} (GroupNorm groups)")
    need(0 < len(c.ch_mult) <= LIMITS["levels"], "ch_mult", f"must hold 1 to {LIMITS['levels']} levels")
    need(all(_is_int(m) and m > 0 for m in c.ch_mult), "ch_mult", "must hold positive integers")
    widest = LIMITS["channels"]
    need(c.ch * max(c.ch_mult) <= widest, "ch_mult", f"makes a level wider than {widest} channels (ch={c.ch})")
    count("num_res_blocks")
    count("z_channels")
    need(len(c.attn_resolutions) <= LIMITS["attn_resolutions"], "attn_resolutions", f"must hold at most {LIMITS['attn_resolutions']} entries")
    need(all(_is_int(r) and r > 0 for r in c.attn_resolutions), "attn_resolutions", "must hold positive integers")
    need(isinstance(c.double_z, bool), "double_z", "must be true or false")
    count("in_channels")
    count("out_ch")
    count("resolution")
    need(isinstance(c.dropout, (int, float)) and 0 <= c.dropout < 1, "dropout", "must be in [0, 1)")
    need(c.attn_type in ATTN_TYPES, "attn_type", f"must be one of {', '.join(ATTN_TYPES)}")
    if c.embed_dim is not None:
        count("embed_dim")
    need(
        c.scaling_factor is None or (_is_number(c.scaling_factor) and c.scaling_factor > 0),
        "scaling_factor",
        "must be null or a positive finite number",
    )
    need(_is_number(c.shift_factor), "shift_factor", "must be a finite number")
    need(isinstance(c.force_upcast, bool), "force_upcast", "must be true or false")
    if c.patch_size is not None:
        ok = len(c.patch_size) == 2 and all(_is_int(p) and 0 < p <= LIMITS["patch"] for p in c.patch_size)
        need(ok, "patch_size", f"must be null or two positive integers of at most {LIMITS['patch']}")
    need(c.batch_norm_eps is None or (_is_number(c.batch_norm_eps) and c.batch_norm_eps > 0), "batch_norm_eps", "must be null or a positive finite number")
    need(c.norm_type in NORM_TYPES, "norm_type", f"must be one of {', '.join(NORM_TYPES)}")
    need((c.patch_size is None) == (c.batch_norm_eps is None), "batch_norm_eps", "goes with patch_size (FLUX.2's latent normalisation): give both or neither")


def _mappings(node: Any):
    """Every mapping in a parsed YAML document, depth first."""
    if isinstance(node, dict):
        yield node
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return
    for child in children:
        yield from _mappings(child)


def config_from_mapping(data: Any, source: str) -> VAEConfig:
    """Our schema, or an LDM/sgm config (a `ddconfig` mapping with a sibling `embed_dim`)."""
    owner = next((m for m in _mappings(data) if isinstance(m.get("ddconfig"), dict)), None)
    if owner is None:
        return VAEConfig.from_dict(data, source)
    ddconfig, embed_dim = owner["ddconfig"], owner.get("embed_dim")
    ddconfig = {k: v for k, v in ddconfig.items() if k != "attn_type" or v in ATTN_TYPES}
    params = dict(ddconfig, embed_dim=embed_dim)
    # LDM's diffusion model carries the latent scale as a scalar `scale_factor`
    scale = next((m["scale_factor"] for m in _mappings(data) if isinstance(m.get("scale_factor"), (int, float))), None)
    if scale is not None:
        params["scaling_factor"] = float(scale)
    return VAEConfig.from_dict(params, f"{source} (ddconfig)")


def load_config(path: str | Path) -> VAEConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return config_from_mapping(data, str(path))


def shipped_config_names() -> list[str]:
    """Names of the configs shipped in configs/models/ (inside the wheel as vaecli.configs.models)."""
    root = resources.files("vaecli.configs.models")
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def shipped_config(name: str) -> VAEConfig:
    root = resources.files("vaecli.configs.models")
    entry = root / f"{name}.yaml"
    if not entry.is_file():
        raise ConfigError(f"no shipped config named {name!r}; shipped: {', '.join(shipped_config_names())}")
    data = yaml.safe_load(entry.read_text(encoding="utf-8"))
    return config_from_mapping(data, f"configs/models/{name}.yaml")
