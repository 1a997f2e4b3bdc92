"""Image files <-> float pixel tensors, with every way a real image folder can go wrong named per file.

Reading gives (3, H, W) float32 in [0, 1]: EXIF orientation applied, 16-bit and float images scaled
without going through 8 bits, palette/grayscale/CMYK converted to RGB, alpha composited over a
chosen background, a GIF's first frame. A file Pillow cannot fully decode (zero bytes, truncated,
not an image, over the decompression-bomb limit) raises InputError naming the file.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from .atomic import atomic_path
from .provenance import image_save_options

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")
IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "tiff": "TIFF"}  # --format -> Pillow format
_SUFFIX_FORMAT = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp", ".tif": "tiff", ".tiff": "tiff"}
BACKGROUNDS = {"white": 1.0, "black": 0.0}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WIDE_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit PNG/TIFF open as one of these


@dataclass(frozen=True)
class SizeSpec:
    """Training-style size handling: `--resize W[xH]` and `--center-crop`."""

    width: int | None = None
    height: int | None = None  # None with a width: scale the shorter side to `width`
    center_crop: bool = False

    @classmethod
    def parse(cls, resize: str | None, center_crop: bool) -> "SizeSpec":
        if not resize:
            return cls(center_crop=center_crop)
        parts = resize.lower().split("x")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            nums = []
        if len(nums) not in (1, 2) or min(nums) <= 0:
            raise ValueError(f"--resize {resize!r}: expected W or WxH with positive integers, e.g. 512 or 768x512")
        return cls(nums[0], nums[1] if len(nums) == 2 else None, center_crop)

    def resized(self, height: int, width: int, factor: int) -> tuple[tuple[int, int], tuple[int, int] | None]:
        """For a height x width image: its (height, width) after the resize, and the centre crop's, or None.

        Sizes only, no pixels: the batch engine uses it to say what a --resize costs before reading any image.
        """
        if self.width is None:
            target = ((height // factor) * factor, (width // factor) * factor) if self.center_crop else None
            if target is not None and min(target) == 0:
                raise ValueError(f"{width}x{height} is smaller than the downsampling factor {factor}; cannot center-crop")
            return (height, width), target
        if self.height is None:
            s = self.width / min(height, width)
            new = (max(1, round(height * s)), max(1, round(width * s)))
            return new, ((self.width, self.width) if self.center_crop else None)
        if self.center_crop:
            s = max(self.width / width, self.height / height)
            new = (max(self.height, math.ceil(height * s - 1e-6)), max(self.width, math.ceil(width * s - 1e-6)))
            return new, (self.height, self.width)
        return (self.height, self.width), None


_TIFF_SAMPLE_FORMATS = {1: "unsigned integer", 2: "signed integer", 3: "float"}


def _tiff_layout(path: Path) -> str:
    """For a TIFF Pillow cannot decode (32-bit float RGB, say), what its pixels are, so the error names the format."""
    from PIL import TiffImagePlugin

    try:
        with open(path, "rb") as f:
            ifd = TiffImagePlugin.ImageFileDirectory_v2(f.read(8))
            f.seek(ifd.next)
            ifd.load(f)
    except Exception:  # noqa: BLE001 - not a TIFF at all: nothing more to say
        return ""
    bits = ifd.get(258, (1,))  # BitsPerSample, per channel
    kind = _TIFF_SAMPLE_FORMATS.get((ifd.get(339) or (1,))[0], "unknown")  # SampleFormat
    return f" (a TIFF of {ifd.get(277, 1)} channel(s) of {bits[0]}-bit {kind}; save it as 8- or 16-bit integer TIFF or PNG)"


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image; every failure becomes a one-line InputError."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    if size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    with warnings.catch_warnings():
        # Pillow only warns between its limit and twice it; a batch tool must refuse both alike.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
            img.seek(0)  # GIF/multi-page TIFF: the first frame
            img.load()  # decode now, so truncation is found here and not in the model's batch
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise InputError(f"{path}: refused as a possible decompression bomb ({e})") from None
        except UnidentifiedImageError:
            raise InputError(f"{path}: not an image Pillow can read{_tiff_layout(path)}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise InputError(f"{path}: corrupt or truncated image ({e})") from None
    return img


def to_rgb_float(img: Image.Image, background: float) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) float32 in [0, 1], compositing alpha over `background`."""
    if img.mode in _WIDE_INT_MODES:
        arr = np.asarray(img).astype(np.float32)
        top = 65535.0 if arr.max(initial=0) <= 65535 else float(2**32 - 1)
        gray = arr / top
        return np.repeat(gray[..., None], 3, axis=-1)  # (H, W) -> (H, W, 3)
    if img.mode == "F":
        gray = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=-1)
    has_alpha = img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0  # (H, W, 4)
        alpha = rgba[..., 3:4]
        return rgba[..., :3] * alpha + background * (1.0 - alpha)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def read_image(path: str | Path, *, alpha: str = "white") -> torch.Tensor:
    """An image file -> (3, H, W) float32 in [0, 1], upright (EXIF) RGB."""
    path = Path(path)
    img = open_image(path)
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # a broken EXIF block must not lose an otherwise good image
        pass
    arr = to_rgb_float(img, BACKGROUNDS[alpha])
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)


def resize_and_crop(x: torch.Tensor, spec: SizeSpec, factor: int) -> tuple[torch.Tensor, str]:
    """Apply --resize/--center-crop to (..., 3, H, W); returns the image and a description of what was done.

    `--resize N` scales the shorter side to N; `--resize WxH` scales to exactly WxH, or with
    `--center-crop` scales to cover WxH and crops the centre. `--center-crop` alone crops the centre to
    the largest multiple of the downsampling factor (instead of padding).
    """
    h, w = x.shape[-2:]
    steps = []
    new, target = spec.resized(h, w, factor)
    if new != (h, w):
        batched = x if x.ndim == 4 else x[None]  # interpolate wants (B, C, H, W)
        batched = F.interpolate(batched, size=new, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        x = batched if x.ndim == 4 else batched[0]
        steps.append(f"resize {w}x{h}->{new[1]}x{new[0]} bicubic")
    if target is not None and tuple(x.shape[-2:]) != target:
        h, w = x.shape[-2:]
        top, left = (h - target[0]) // 2, (w - target[1]) // 2
        x = x[..., top : top + target[0], left : left + target[1]]
        steps.append(f"center-crop {target[1]}x{target[0]}")
    return x, "; ".join(steps)


def pad_to_multiple(x: torch.Tensor, factor: int) -> tuple[torch.Tensor, str]:
    """Pad (..., H, W) on the bottom/right up to multiples of `factor`; the decoder's output is cropped back.

    Reflect padding keeps edge statistics natural for the encoder; an image thinner than the padding
    (reflect needs pad < size) falls back to replicating the edge.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % factor, (-w) % factor
    if ph == 0 and pw == 0:
        return x, ""
    mode = "reflect" if ph < h and pw < w else "replicate"
    batched = x if x.ndim == 4 else x[None]  # F.pad reflect wants (B, C, H, W)
    batched = F.pad(batched, (0, pw, 0, ph), mode=mode)
    return (batched if x.ndim == 4 else batched[0]), f"pad {mode} right={pw} bottom={ph} to {w + pw}x{h + ph}"


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded (one float temporary: a 4K frame is 100 MB)."""
    return x.detach().float().mul(255.0).clamp_(0, 255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


_EXIF_ORIENTATION = 0x0112
_ORIENTATIONS_TURNED = (5, 6, 7, 8)  # a quarter turn (with or without a mirror): width and height swap


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as read_image will return it (EXIF orientation applied), from the header without
    decoding the pixels; None when Pillow cannot tell."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            turned = img.getexif().get(_EXIF_ORIENTATION) in _ORIENTATIONS_TURNED
    except Exception:  # noqa: BLE001 - the full read names the cause later
        return None
    return (h, w) if turned else (w, h)


def write_image(x: torch.Tensor | np.ndarray, path: str | Path, fmt: str | None = None, *,
                provenance: dict | None = None, before_replace=None) -> None:
    """Save (3, H, W) float in [0, 1] (or (H, W, 3) uint8) atomically, with its provenance document.

    The format comes from `fmt` or the suffix; `before_replace` is atomic_path's last check.
    """
    path = Path(path)
    fmt = fmt or _SUFFIX_FORMAT[path.suffix.lower()]
    img = Image.fromarray(to_uint8(x) if isinstance(x, torch.Tensor) else x, "RGB")
    options = {"quality": 95} if fmt in ("jpg", "webp") else {}
    with atomic_path(path, before_replace) as tmp:
        img.save(tmp, format=IMAGE_FORMATS[fmt], **options, **image_save_options(fmt, provenance))
