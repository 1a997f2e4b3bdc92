"""Provenance documents inside output files: which source, model and options made a file, read back cheaply.

Every file vaecli writes carries one JSON document (built by vaecli.batch.freshness) where its format
has room for text, so the file alone says whether vaecli wrote it, from what, and how:

| output | where the document lives |
|---|---|
| latent `.safetensors` | metadata key `vaecli_provenance` |
| `.png` | a tEXt chunk `vaecli_provenance` (before the image data) |
| `.jpg`, `.gif` | the comment (`vaecli_provenance=` + JSON) |
| `.webp` | an XMP packet (attribute `vaecli:provenance`) |
| `.tif(f)` | the ImageDescription tag (`vaecli_provenance=` + JSON) |
| `.mp4` | the container's `comment` tag (`vaecli_provenance=` + JSON) |

Reading touches only headers (PNG chunks are parsed up to the image data by hand, so a huge image
costs nothing and meets no decompression-bomb limit). Any file without a readable document reads as
None: not vaecli's.
"""

from __future__ import annotations

import html
import json
import re
import struct
import subprocess
from pathlib import Path

PROVENANCE_KEY = "vaecli_provenance"
_PREFIX = PROVENANCE_KEY + "="
_XMP_ATTR = re.compile(r'vaecli:provenance="([^"]*)"')
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONTAINER_SUFFIXES = (".safetensors", ".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".gif", ".mp4")  # files that can hold one


def provenance_text(doc: dict) -> str:
    """The stored form: compact JSON, ASCII only (paths with any characters survive every container)."""
    return json.dumps(doc, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def _parse(text: str | bytes | None) -> dict | None:
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    text = text.removeprefix(_PREFIX)
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def image_save_options(fmt: str, doc: dict | None) -> dict:
    """Pillow `save` keyword arguments that embed `doc` in an image of format png/jpg/webp/tiff/gif."""
    if doc is None:
        return {}
    text = provenance_text(doc)
    if fmt == "png":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text(PROVENANCE_KEY, text)
        return {"pnginfo": info}
    if fmt == "webp":
        packet = (
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description xmlns:vaecli="urn:vaecli:provenance:1" vaecli:provenance="{html.escape(text, quote=True)}"/>'
            "</rdf:RDF></x:xmpmeta>"
        )
        return {"xmp": packet.encode("ascii")}
    if fmt == "tiff":
        return {"description": _PREFIX + text}
    if fmt in ("jpg", "gif"):
        return {"comment": (_PREFIX + text).encode("ascii")}
    raise ValueError(f"no provenance container for format {fmt!r}")


def video_output_params(doc: dict | None) -> list[str]:
    """ffmpeg arguments that store `doc` in an mp4's comment tag."""
    return [] if doc is None else ["-metadata", f"comment={_PREFIX}{provenance_text(doc)}"]


def _png_text(path: Path) -> str | None:
    """The tEXt value of our key, reading chunks up to the first IDAT only."""
    with open(path, "rb") as f:
        if f.read(8) != _PNG_SIGNATURE:
            return None
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I4s", head)
            if kind in (b"IDAT", b"IEND") or length > 1 << 24:
                return None
            data = f.read(length)
            f.seek(4, 1)  # CRC
            if kind == b"tEXt" and data.startswith(PROVENANCE_KEY.encode() + b"\0"):
                return data[len(PROVENANCE_KEY) + 1 :].decode("latin-1")


def _pillow_text(path: Path) -> str | bytes | None:
    from PIL import Image

    with Image.open(path) as img:  # parses headers only
        if img.format == "TIFF":
            return img.tag_v2.get(270)
        if img.format == "WEBP":
            match = _XMP_ATTR.search((img.info.get("xmp") or b"").decode("ascii", errors="replace"))
            return None if match is None else html.unescape(match.group(1))
        return img.info.get("comment")


def _mp4_text(path: Path) -> str | None:
    import imageio_ffmpeg

    proc = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
        capture_output=True, text=True, timeout=60,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("comment="):
            return re.sub(r"\\(.)", r"\1", line[len("comment=") :])  # ffmetadata escapes = ; # \ with a backslash
    return None


def read_provenance(path: str | Path) -> dict | None:
    """The document stored in an output file, or None (absent, unreadable, or not a file vaecli writes)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CONTAINER_SUFFIXES:
        return None
    try:
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return _parse((f.metadata() or {}).get(PROVENANCE_KEY))
        if suffix == ".png":
            return _parse(_png_text(path))
        if suffix in (".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".gif"):
            return _parse(_pillow_text(path))
        if suffix == ".mp4":
            return _parse(_mp4_text(path))
    except Exception:  # noqa: BLE001 - a damaged or foreign file simply has no provenance of ours
        return None
    return None
