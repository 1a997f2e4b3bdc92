"""Command-line arguments -> the input files of a run: folders searched, globs expanded, non-media files dropped.

A folder is searched recursively in sorted order; vaecli's temporaries and files whose suffix is
not one the command reads (captions, .json sidecars, notes) are left out before anything else
happens, so they never claim an output name. A folder search or a glob also leaves out, and says so
in one warning line per run with counts:

- hidden files (a name, or a folder above it below the argument, starting with a dot);
- dangling symbolic links;
- images and videos vaecli itself wrote (decoded images, reconstructions: their provenance
  document says so) from a source inside the same folder argument (a glob: the folder before its
  first wildcard), by the recorded path or, for a folder moved with its outputs, by the recorded
  bytes; so a rerun, or encode after decode into the same folder, does not take the run's own
  outputs for new inputs. Latents are decode's inputs by design: they are taken.

The run's own output folder is not searched when it lies inside an input folder. A file named
explicitly is always an input: if it is not of a kind the command reads, or is a dangling link, it
fails alone. A path that does not exist is a failed input; a folder or glob with nothing to work on
is a warning.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..io.atomic import TMP_PREFIX
from ..io.hashing import file_digest
from ..io.provenance import read_provenance

_GLOB_CHARS = set("*?[")
PIXEL_OUTPUTS = ("image", "video", "reconstruction")  # the `output` option of decode's and roundtrip's recipes


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


def _glob_root(pattern: str) -> Path:
    """The folder a glob searches: its leading parts before the first wildcard ("photos/**/*.png" -> photos)."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if _GLOB_CHARS & set(part)), len(parts))
    return Path(*parts[:fixed]) if fixed else Path(".")


def _recorded_source(path: Path, outputs: tuple[str, ...] | None) -> dict | None:
    """The `source` of the provenance vaecli stored in `path` (when its `output` option is one of `outputs`), else None."""
    doc = read_provenance(path)
    if not (isinstance(doc, dict) and isinstance(doc.get("options"), dict) and isinstance(doc.get("source"), dict)):
        return None
    return doc["source"] if outputs is None or doc["options"].get("output") in outputs else None


def pixel_source(path: Path) -> dict | None:
    """The recorded source (path, size, sha256...) of an image or video vaecli wrote (decoded, reconstructed); else None.

    Only a file still under the name vaecli gave it counts: outputs are named after their source
    (`a.png` or `a.compare.png` for `a.jpg` or `a.safetensors`), and an editor that keeps the embedded
    comment (Pillow carries a JPEG's) while saving a new photo under another name has made a user's file.
    """
    source = _recorded_source(path, PIXEL_OUTPUTS)
    if source is None or not isinstance(source.get("path"), str):
        return None
    stem = Path(source["path"]).stem
    return source if Path(path.stem).stem == stem or path.stem == stem else None


def _through_latent(source: dict) -> dict | None:
    """For an image decoded from a latent vaecli encoded: the latent's own recorded source (the photo), else None."""
    # torch comes with io.latents: imported only once a decoded image is met
    from ..io.latents import LATENT_SUFFIXES

    path = source.get("path")
    if isinstance(path, str) and Path(path).suffix.lower() in LATENT_SUFFIXES:
        return _recorded_source(Path(path), None)  # read_provenance: None for a missing or damaged latent
    return None


class _Folder:
    """One folder argument (a glob: its fixed part) and, built only when needed, its files by size."""

    def __init__(self, root: Path, files: list[Path]):
        self.root, self.files = root.resolve(), files
        self._by_size: dict[int, list[Path]] | None = None

    def holds(self, source: dict) -> bool:
        """Whether the recorded source lies in this folder: by its path, or by its bytes (the folder moved with its
        outputs); for an image decoded from a latent vaecli encoded, whether that latent's source does."""
        if self._holds(source):
            return True
        upstream = _through_latent(source)  # read only when the direct source is not here
        return upstream is not None and self._holds(upstream)

    def _holds(self, source: dict) -> bool:
        path = source.get("path")
        if isinstance(path, str) and _inside(Path(path), self.root):
            return True
        if self._by_size is None:
            self._by_size = {}
            for f in self.files:
                with contextlib.suppress(OSError):
                    if f.is_file():
                        self._by_size.setdefault(f.stat().st_size, []).append(f)
        return any(file_digest(f) == source.get("sha256") for f in self._by_size.get(source.get("size"), ()))  # type: ignore[arg-type]


def _walk(folder: Path) -> list[Path]:
    """Every file below `folder`, sorted, through linked folders too (as a `**` glob goes), each real folder once.

    Path.rglob does not follow a linked folder before Python 3.13, so a photo library that links in a
    shared folder would lose it without a word; a link loop is cut at the first folder seen again.
    """
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []
    for top, folders, files in os.walk(folder, followlinks=True):
        try:
            st = os.stat(top)
            real = (st.st_dev, st.st_ino)
        except OSError:
            real = None
        if real is None or real in seen:  # gone since listed, or a folder already searched (a link loop)
            folders[:] = []
            continue
        seen.add(real)
        found += [Path(top) / name for name in files]
    return sorted(found)


@dataclass
class LeftOut:
    """What folder searches and globs left out that a user may have meant as inputs, for one warning line."""

    hidden: list[Path] = field(default_factory=list)
    dangling: list[Path] = field(default_factory=list)
    ours: list[Path] = field(default_factory=list)

    def count(self) -> int:
        return len(self.hidden) + len(self.dangling) + len(self.ours)

    def line(self) -> str | None:
        """`left out of the search: 2 hidden files (e.g. a/.x.png), ...`, or None when nothing was."""
        parts = []
        for paths, one, many in ((self.hidden, "hidden file", "hidden files"), (self.dangling, "dangling symbolic link", "dangling symbolic links"),
                                 (self.ours, "image or video vaecli wrote from a file in the same folder",
                                  "images or videos vaecli wrote from files in the same folder")):
            if paths:
                parts.append(f"{len(paths)} {one if len(paths) == 1 else many} ({'' if len(paths) == 1 else 'e.g. '}{paths[0]})")
        if not parts:
            return None
        return f"left out of the folder and glob searches: {', '.join(parts)}; name a file to take it as an input"


def expand_inputs(args: Iterable[str], suffixes: tuple[str, ...], warn: Callable[[str], None],
                  exclude: Path | None = None) -> list[Found]:
    """Each argument -> its files, in argument order, each argument's files sorted, duplicates once.

    `suffixes`: what the command reads; `exclude`: a folder (the run's -o) never searched.
    Warnings go to `warn`: one per folder or glob with nothing to do, one for everything left out.
    """
    wanted = ", ".join(suffixes)
    out: list[Found] = []
    seen: set[Path] = set()
    skip = None if exclude is None else exclude.resolve()
    left_out = LeftOut()

    def add(found: Found) -> None:
        key = found.path.resolve() if found.error is None else found.path
        if key not in seen:
            seen.add(key)
            out.append(found)

    def search(candidates: list[Path], root: Path) -> list[Path]:
        """The usable files among `candidates` (sorted), recording what a user may have meant."""
        below = skip if skip is not None and skip != root.resolve() else None  # -o inside this folder, not the folder itself
        folder = _Folder(root, candidates)
        files = []
        for p in candidates:
            if p.suffix.lower() not in suffixes or p.name.startswith(TMP_PREFIX) or (below is not None and _inside(p.resolve(), below)):
                continue
            if p.is_symlink() and not p.exists():
                left_out.dangling.append(p)
            elif not p.is_file():
                continue
            elif _hidden(p.absolute(), root.absolute()):
                left_out.hidden.append(p)
            elif (source := pixel_source(p)) is not None and folder.holds(source):
                left_out.ours.append(p)
            else:
                files.append(p)
        return files

    for arg in args:
        path = Path(arg)
        before = left_out.count()
        if path.is_dir():
            files = search(_walk(path), path)
            if not files and left_out.count() > before:
                warn(f"{arg}: nothing to do in this folder: every {wanted} file in it was left out (said below)")
            elif not files:
                warn(f"{arg}: nothing to do in this folder (no {wanted} files)")
            for p in files:
                add(Found(p, path))
        elif path.exists():
            if path.suffix.lower() in suffixes:
                add(Found(path))
            else:
                add(Found(path, error=f"{path}: not a file this command reads (suffix {path.suffix or 'none'}; expected {wanted})"))
        elif path.is_symlink():
            add(Found(path, error=f"{arg}: a dangling symbolic link (its target {os.readlink(path)} does not exist)"))
        elif _GLOB_CHARS & set(arg):
            files = search([Path(m) for m in sorted(glob.glob(arg, recursive=True))], _glob_root(arg))
            if not files and left_out.count() > before:
                warn(f"{arg}: every {wanted} file it matches was left out (said below)")
            elif not files:
                warn(f"{arg}: matches no {wanted} file")
            for p in files:
                add(Found(p))
        else:
            add(Found(path, error=f"{arg}: no such file or folder"))
    if (line := left_out.line()) is not None:
        warn(line)
    return out
