"""Video files <-> streams of frames: mp4/webm/mov/mkv via imageio-ffmpeg, animated GIFs via Pillow.

Frames are streamed, never all held at once, so a long video costs the memory of one batch of
frames plus its latents. Failures raise InputError naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageSequence

from ..errors import InputError
from .atomic import atomic_path
from .images import BACKGROUNDS, open_image, to_rgb_float

FFMPEG_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
VIDEO_FORMATS = ("mp4", "gif")
_DEFAULT_GIF_FRAME_MS = 100  # what browsers use for a GIF frame without a duration


@dataclass
class VideoStream:
    """An open video: `frames` yields (3, H, W) float32 in [0, 1]; `fps` is known before the first frame."""

    frames: Iterator[torch.Tensor]
    fps: float
    width: int
    height: int


def is_animated_gif(path: Path) -> bool:
    """An animated GIF is a video; a single-frame GIF is an image."""
    if path.suffix.lower() != ".gif":
        return False
    try:
        with Image.open(path) as img:
            return getattr(img, "n_frames", 1) > 1
    except Exception:  # unreadable: let the image reader name the cause
        return False


def is_video(path: Path) -> bool:
    return path.suffix.lower() in FFMPEG_SUFFIXES or is_animated_gif(path)


def _gif_stream(path: Path, alpha: str) -> VideoStream:
    img = open_image(path)
    durations = []
    for frame in ImageSequence.Iterator(img):
        durations.append(frame.info.get("duration") or _DEFAULT_GIF_FRAME_MS)
    fps = 1000.0 / (sum(durations) / len(durations))

    def frames() -> Iterator[torch.Tensor]:
        try:
            for frame in ImageSequence.Iterator(img):
                arr = to_rgb_float(frame.convert("RGBA"), BACKGROUNDS[alpha])
                yield torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
        except (OSError, ValueError, EOFError) as e:
            raise InputError(f"{path}: corrupt or truncated GIF ({e})") from None

    return VideoStream(frames(), fps, img.width, img.height)


def _ffmpeg_stream(path: Path) -> VideoStream:
    import imageio.v2 as iio

    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        reader = iio.get_reader(path, format="FFMPEG")
        meta = reader.get_meta_data()
    except Exception as e:  # imageio/ffmpeg raise OSError, RuntimeError, IndexError... for bad files
        raise InputError(f"{path}: not a readable video ({str(e).strip().splitlines()[0][:200]})") from None
    fps = float(meta.get("fps") or 0)
    width, height = meta.get("size", (0, 0))
    if fps <= 0 or width <= 0:
        reader.close()
        raise InputError(f"{path}: video has no frame rate or size in its metadata")

    def frames() -> Iterator[torch.Tensor]:
        try:
            for arr in reader:  # (H, W, 3) uint8
                yield torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1).float() / 255.0
        except Exception as e:
            raise InputError(f"{path}: video decoding failed ({str(e).strip().splitlines()[0][:200]})") from None
        finally:
            reader.close()

    return VideoStream(frames(), fps, int(width), int(height))


def open_video(path: str | Path, *, alpha: str = "white") -> VideoStream:
    path = Path(path)
    return _gif_stream(path, alpha) if path.suffix.lower() == ".gif" else _ffmpeg_stream(path)


def write_video(arrays: list[np.ndarray], path: str | Path, fps: float) -> None:
    """Write (H, W, 3) uint8 frames (see `to_uint8`) as mp4 (H.264) or GIF, chosen by the suffix, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".gif":
            images = [Image.fromarray(a, "RGB") for a in arrays]
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
            return
        import imageio.v2 as iio

        h, w = arrays[0].shape[:2]
        # yuv420p plays everywhere but needs even sizes; odd sizes keep every pixel with yuv444p.
        pix = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
        writer = iio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8, macro_block_size=1, pixelformat=pix)
        try:
            for a in arrays:
                writer.append_data(a)
        finally:
            writer.close()
