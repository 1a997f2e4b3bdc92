"""Command-line arguments -> the input files of a run: folders searched, globs expanded, non-media files dropped.

A folder is searched recursively in sorted order; hidden files, vaecli's temporaries and files
whose suffix is not one the command reads (captions, .json sidecars, notes) are left out before
anything else happens, so they never claim an output name. The run's own output folder is left
out too when it lies inside an input folder, so a rerun does not take its outputs for inputs. A
glob is a list of files with the same filter. A file named explicitly is always an input: if it is
not of a kind the command reads, it fails alone. A path that does not exist is a failed input; a
folder or glob with nothing to work on is a warning.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..io.atomic import TMP_PREFIX

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Found:
    """One input file, the folder argument it was found under (None: named or globbed), or why it cannot be used."""

    path: Path
    root: Path | None = None
    error: str | None = None

    @property
    def relative(self) -> Path:
        """Where it goes under -o: its path below its folder argument, else its name."""
        return self.path.relative_to(self.root) if self.root is not None else Path(self.path.name)

    @property
    def key(self) -> str:
        """Its name within the run, the same from any working folder and after moving the data: the
        folder argument's name and the path below it (`cats/0001.jpg` for `cats/`), else its own
        folder's name and its name. Per-file sample seeds derive from it, so two folders differ."""
        if self.root is not None:
            return (Path(self.root.resolve().name) / self.relative).as_posix()
        return (Path(self.path.resolve().parent.name) / self.path.name).as_posix()


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and (path == folder or folder in path.parents)


def expand_inputs(args: Iterable[str], suffixes: tuple[str, ...], warn: Callable[[str], None],
                  exclude: Path | None = None) -> list[Found]:
    """Each argument -> its files, in argument order, each argument's files sorted, duplicates once.

    `suffixes`: what the command reads; `exclude`: a folder (the run's -o) never searched.
    Warnings go to `warn`.
    """
    wanted = ", ".join(suffixes)
    out: list[Found] = []
    seen: set[Path] = set()
    skip = None if exclude is None else exclude.resolve()

    def add(found: Found) -> None:
        key = found.path.resolve() if found.error is None else found.path
        if key not in seen:
            seen.add(key)
            out.append(found)

    def usable(p: Path) -> bool:
        return p.suffix.lower() in suffixes and not p.name.startswith(TMP_PREFIX) and p.is_file()

    for arg in args:
        path = Path(arg)
        if path.is_dir():
            below = skip if skip is not None and skip != path.resolve() else None  # -o inside this folder, not the folder itself
            files = [p for p in sorted(path.rglob("*")) if not _hidden(p, path) and usable(p) and not _inside(p.resolve(), below)]
            if not files:
                warn(f"{arg}: nothing to do in this folder (no {wanted} files)")
            for p in files:
                add(Found(p, path))
        elif path.exists():
            if path.suffix.lower() in suffixes:
                add(Found(path))
            else:
                add(Found(path, error=f"{path}: not a file this command reads (suffix {path.suffix or 'none'}; expected {wanted})"))
        elif _GLOB_CHARS & set(arg):
            files = [Path(m) for m in sorted(glob.glob(arg, recursive=True)) if usable(Path(m))]
            if not files:
                warn(f"{arg}: matches no {wanted} file")
            for p in files:
                add(Found(p))
        else:
            add(Found(path, error=f"{arg}: no such file or folder"))
    return out
