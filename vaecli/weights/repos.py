"""Models named as Hugging Face repositories (`ORG/REPO[/SUBFOLDER]`) or as diffusers folders on disk.

A diffusers autoencoder is a folder with `config.json` and `diffusion_pytorch_model[.VARIANT].safetensors`
(or `.bin`, a pickle). A repository id names such a folder on the hub: fetched by
`vaecli fetch-weights ORG/REPO[/SUBFOLDER]` into vaecli's cache as `<cache>/hf/ORG--REPO/<path in repo>`,
or already in the Hugging Face cache. Nothing here touches the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from .hub import HF_URL

CONFIG_NAME = "config.json"
WEIGHTS_STEM = "diffusion_pytorch_model"
VARIANTS = ("", "fp16", "bf16")  # preferred in this order: full precision when the repository has it
_SEGMENT = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"({_SEGMENT}/{_SEGMENT})((?:/{_SEGMENT})*)")


def weights_names() -> list[str]:
    """The file names a diffusers folder may hold its weights under, preferred first."""
    safetensors = [f"{WEIGHTS_STEM}{'.' + v if v else ''}.safetensors" for v in VARIANTS]
    return safetensors + [f"{WEIGHTS_STEM}{'.' + v if v else ''}.bin" for v in VARIANTS]


@dataclass(frozen=True)
class RepoRef:
    """`ORG/REPO[/SUBFOLDER]`: a folder of a Hugging Face model repository, on its main branch."""

    repo_id: str  # ORG/REPO
    subfolder: str  # "" for the repository's root

    @classmethod
    def parse(cls, text: str) -> RepoRef | None:
        """The reference `text` spells, None when it is not of the form ORG/REPO[/SUBFOLDER]."""
        m = _REPO_ID.fullmatch(text)
        if m is None or ".." in text:
            return None
        return cls(m.group(1), m.group(2).lstrip("/"))

    def __str__(self) -> str:
        return f"{self.repo_id}/{self.subfolder}" if self.subfolder else self.repo_id

    def path_in_repo(self, filename: str) -> str:
        return f"{self.subfolder}/{filename}" if self.subfolder else filename

    def url(self, filename: str) -> str:
        """The canonical download URL (a mirror is applied by the downloader)."""
        return f"{HF_URL}/{self.repo_id}/resolve/main/{self.path_in_repo(filename)}"

    def cache_folder(self, root: Path) -> Path:
        """Where fetch-weights puts this folder's files in vaecli's cache `root`."""
        folder = root / "hf" / self.repo_id.replace("/", "--")
        return folder / self.subfolder if self.subfolder else folder


def is_diffusers_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_NAME).is_file()


def folder_weights(folder: Path) -> Path:
    """The weights file of a diffusers folder, full precision preferred; CheckpointError naming what is there."""
    for name in weights_names():
        if (folder / name).is_file():
            return folder / name
    if (folder / f"{WEIGHTS_STEM}.safetensors.index.json").is_file():
        raise CheckpointError(f"{folder}: weights split into shards, which no autoencoder needs; vaecli reads one file")
    shown = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
    raise CheckpointError(f"{folder}: no {WEIGHTS_STEM}.safetensors (or an fp16/bf16 variant, or .bin) here; found {shown}")
