"""The output-safety rule and freshness: may this output be written, and is the one on disk already right?

Every output vaecli writes carries a provenance document (vaecli.io.provenance): the source's
resolved path and fingerprint (size, mtime_ns, sha256, taken before the source was read), the
model's identity (registry name, sha256 of the weights file and of a --config file) and every
option that changes the output's bytes. For each planned output that already exists:

- its document names this same source (its path, or its exact bytes: a dataset moved with its
  outputs, a copy): it is ours. Skipped when the model, the options and the source's fingerprint
  all match in full (a touched file with the same sha256 still matches), redone otherwise, redone
  anyway with --overwrite;
- anything else (a user's photo, an unrelated .safetensors, a file vaecli made from another
  source) is refused for this input with a one-line error, unless --overwrite.

The same rule runs once more just before each rename (`write_guard`), so a file that appeared or
changed during the run is never silently replaced either.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import InputError
from ..io.hashing import DigestCache, file_digest
from ..io.provenance import read_provenance

DOCUMENT_FORMAT = 1


def _plain(value):
    """The value as JSON reads it back (tuples become lists), so a recipe compares equal to a stored one."""
    return json.loads(json.dumps(value))


def model_identity(name: str | None, weights: Path, config_file: Path | None, digests: DigestCache) -> dict:
    """What makes a model the same model: its registry name, and the content of its weights and config files."""
    return _plain({
        "name": name,
        "weights_sha256": digests.sha256(weights),
        "config_sha256": None if config_file is None else file_digest(config_file),
    })


@dataclass(frozen=True)
class Recipe:
    """How an output is made from its source: the model's identity and every option that changes its bytes."""

    model: dict
    options: dict

    @classmethod
    def of(cls, model: dict, **options) -> "Recipe":
        return cls(_plain(model), _plain(options))

    def document(self, source: Path, fingerprint: dict, results: dict | None = None) -> dict:
        """The provenance document an output made this way from `source` carries."""
        return {
            "format": DOCUMENT_FORMAT,
            "vaecli": __version__,
            "source": {"path": str(Path(source).resolve()), **fingerprint},
            "model": self.model,
            "options": self.options,
            "results": _plain(results or {}),
        }


def file_state(path: Path) -> tuple | None:
    """What a later look compares against: None when absent, else (inode, size, mtime_ns)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class SourceHashes:
    """sha256 of sources, computed at most once per run and only when size and mtime cannot settle a question."""

    def __init__(self):
        self._known: dict[tuple, str] = {}

    def sha256(self, source: Path) -> str:
        st = source.stat()
        key = (str(source), st.st_size, st.st_mtime_ns)
        if key not in self._known:
            self._known[key] = file_digest(source)
        return self._known[key]

    def unchanged(self, source: Path, recorded: dict) -> bool:
        st = source.stat()
        if recorded.get("size") != st.st_size:
            return False
        return recorded.get("mtime_ns") == st.st_mtime_ns or recorded.get("sha256") == self.sha256(source)


def _ours(doc: dict | None, source: Path, hashes: SourceHashes) -> bool:
    """Made by vaecli from this source: the recorded path is this file's, or (a dataset moved, a copy)
    the recorded bytes are this file's bytes, so what it holds is what this source would give."""
    if not (isinstance(doc, dict) and isinstance(doc.get("source"), dict)):
        return False
    recorded = doc["source"]
    if recorded.get("path") == str(source.resolve()):
        return True
    return recorded.get("size") == source.stat().st_size and recorded.get("sha256") == hashes.sha256(source)


def _refusal(source: Path, output: Path, doc: dict | None) -> str:
    if isinstance(doc, dict) and isinstance(doc.get("source"), dict):
        why = f"was made by vaecli from {doc['source'].get('path')}"
    else:
        why = "was not written by vaecli"
    return f"{source}: {output} already exists and {why}; pass --overwrite to replace it, or choose another -o"


@dataclass
class Decision:
    """What to do with one job: "todo", "skip" (with the results recorded in its output) or "fail"."""

    action: str
    error: str | None = None
    recorded: dict | None = None


def decide(source: Path, outputs: tuple[Path, ...], recipe: Recipe, overwrite: bool, needed: tuple[str, ...],
           hashes: SourceHashes, seen: dict) -> Decision:
    """Judge every planned output of one source (see the module docstring); fills `seen` for `write_guard`.

    `needed`: result fields a skipped output must have recorded (a roundtrip's metrics) to be reused.
    """
    fresh, recorded = True, None
    for out in outputs:
        seen[out] = file_state(out)
        if seen[out] is None:
            fresh = False
            continue
        if out.is_dir():
            return Decision("fail", f"{source}: its output {out} is a folder")
        doc = read_provenance(out)
        if not _ours(doc, source, hashes):
            if not overwrite:
                return Decision("fail", _refusal(source, out, doc))
            fresh = False
            continue
        same = doc.get("model") == recipe.model and doc.get("options") == recipe.options
        results = doc.get("results") if isinstance(doc.get("results"), dict) else {}
        if not (same and all(k in results for k in needed) and hashes.unchanged(source, doc["source"])):
            fresh = False
        elif recorded is None:
            recorded = results
    if fresh and outputs and not overwrite:
        return Decision("skip", recorded=recorded or {})
    return Decision("todo")


def write_guard(source: Path, output: Path, seen: dict, overwrite: bool):
    """The last check before the rename onto `output`: if the file there changed since it was judged,
    it may be replaced only when it is ours (another vaecli run for the same source) or with --overwrite."""

    def check() -> None:
        if overwrite or file_state(output) == seen.get(output):
            return
        if not _ours(read_provenance(output), source, SourceHashes()):
            raise InputError(f"{source}: {output} appeared or changed during the run and is not ours to replace; left as it is")

    return check
