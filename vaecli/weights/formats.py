"""What a weights file is, told from its bytes: a checked safetensors header, or a pickle.

The safetensors layout is recognised first: an 8-byte little-endian header length, then a JSON
object of that length that fits in the file, whose tensors all lie inside the data that follows.
Only bytes that are not that layout are tested for the zip (`PK`) and pickle (0x80) signatures of
torch.save: the first byte of a safetensors file is the low byte of its header length, so testing
it first would refuse about one valid file in 32.

Reading the header needs no tensor data, so a file can be judged before any model is built.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
ZIP_SIGNATURE = b"PK\x03\x04"  # torch.save's default container
_PICKLE_PROTOCOL = b"\x80"  # PROTO opcode, followed by the protocol number (2 to 5)


@dataclass(frozen=True)
class SafetensorsHeader:
    """The checked header of a safetensors file: each tensor's dtype and shape, and the metadata."""

    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    metadata: dict[str, str]


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _parse_header(raw: bytes, data_len: int) -> SafetensorsHeader | None:
    """The header when `raw` is a safetensors JSON header over `data_len` bytes of data, else None."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    metadata = doc.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        return None
    shapes, dtypes = {}, {}
    for name, info in doc.items():
        if not isinstance(info, dict) or not isinstance(info.get("dtype"), str):
            return None
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            return None
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
            return None
        if not offsets[0] <= offsets[1] <= data_len:
            return None
        shapes[name], dtypes[name] = tuple(shape), info["dtype"]
    return SafetensorsHeader(shapes, dtypes, metadata)


def header_of_bytes(data: bytes) -> SafetensorsHeader | None:
    """The checked header of safetensors bytes held in memory; None when they are not that layout."""
    header_len = struct.unpack("<Q", data[:8])[0] if len(data) >= 10 else 0
    if not 2 <= header_len <= min(MAX_HEADER_BYTES, len(data) - 8):
        return None
    return _parse_header(data[8 : 8 + header_len], len(data) - 8 - header_len)


def looks_like_pickle(head: bytes) -> bool:
    """torch.save's zip container, or a bare pickle (protocol 2 to 5)."""
    return head.startswith(ZIP_SIGNATURE) or (head[:1] == _PICKLE_PROTOCOL and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))


def read_header(path: Path) -> SafetensorsHeader | None:
    """The safetensors header of `path`, or None when it is a pickle (by its bytes or its suffix).

    Anything else (empty, truncated, text, a damaged header) raises CheckpointError saying what it is.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a weights file")
    with open(path, "rb") as f:
        head = f.read(9)
        header_len = struct.unpack("<Q", head[:8])[0] if len(head) == 9 else None
        fits = header_len is not None and 2 <= header_len <= min(MAX_HEADER_BYTES, size - 8)
        raw = head[8:] + f.read(header_len - 1) if fits else b""
    json_follows = head[8:9] == b"{"  # a pickle never has this byte there: it is safetensors, maybe damaged
    if fits and json_follows:
        header = _parse_header(raw, size - 8 - header_len)
        if header is not None:
            return header
        raise CheckpointError(f"{path}: damaged or truncated safetensors file (its header does not describe the {size} bytes there)")
    if not json_follows and (looks_like_pickle(head) or path.suffix.lower() in PICKLE_SUFFIXES):
        return None
    if header_len is None:
        raise CheckpointError(f"{path}: truncated: {size} bytes is too short for a safetensors header")
    raise CheckpointError(f"{path}: not a safetensors file, or truncated (header says {header_len} bytes, the file has {size})")


def pickle_refused(path: Path) -> CheckpointError:
    """The error for a pickle met without --allow-pickle."""
    return CheckpointError(
        f"{path}: a pickle (torch.save) checkpoint, which can run code when loaded, so it is refused by default; "
        "pass --allow-pickle to load it with weights_only=True, or convert it to safetensors"
    )
