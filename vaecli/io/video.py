"""Video files <-> streams of frames: mp4/webm/mov/mkv via imageio-ffmpeg, animated GIFs via Pillow.

Frames are streamed in both directions, never all held at once (GIF output aside, see VideoWriter),
so a long video costs the memory of one batch of frames plus its latents. Failures raise InputError
naming the file.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageSequence

from ..errors import InputError
from .atomic import atomic_path, scratch_path
from .images import BACKGROUNDS, open_image, to_rgb_float
from .latents import FPS_RANGE
from .provenance import image_save_options, video_output_params

FFMPEG_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
VIDEO_FORMATS = ("mp4", "gif")
_DEFAULT_GIF_FRAME_MS = 100  # what browsers use for a GIF frame without a duration
_GIF_ERRORS = (OSError, ValueError, EOFError, SyntaxError, IndexError)  # what Pillow raises on a damaged GIF


@dataclass
class VideoStream:
    """An open video: `frames` yields (3, H, W) float32 in [0, 1]; `fps` is known before the first frame."""

    frames: Iterator[torch.Tensor]
    fps: float
    width: int
    height: int


def is_animated_gif(path: Path) -> bool:
    """An animated GIF is a video; a single-frame GIF is an image (looks for a second frame only)."""
    if path.suffix.lower() != ".gif":
        return False
    try:
        with Image.open(path) as img:
            return bool(getattr(img, "is_animated", False))
    except Exception:  # noqa: BLE001 - unreadable: let the image reader name the cause
        return False


def is_video(path: Path) -> bool:
    return path.suffix.lower() in FFMPEG_SUFFIXES or is_animated_gif(path)


def _gif_stream(path: Path, alpha: str) -> VideoStream:
    img = open_image(path)
    try:  # every frame's duration is read before the first frame is used: a truncated file fails here
        durations = [frame.info.get("duration") or _DEFAULT_GIF_FRAME_MS for frame in ImageSequence.Iterator(img)]
    except _GIF_ERRORS as e:
        raise InputError(f"{path}: corrupt or truncated GIF ({e})") from None
    fps = 1000.0 / (sum(durations) / len(durations))

    def frames() -> Iterator[torch.Tensor]:
        try:
            for frame in ImageSequence.Iterator(img):
                arr = to_rgb_float(frame.convert("RGBA"), BACKGROUNDS[alpha])
                yield torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
        except _GIF_ERRORS as e:
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
    if not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
        reader.close()
        raise InputError(f"{path}: frame rate {fps:g} is outside {FPS_RANGE[0]:g} to {FPS_RANGE[1]:g}")

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


class VideoWriter:
    """Write (H, W, 3) uint8 frames as they come into an mp4 (H.264) or GIF, chosen by the suffix, atomically.

    An mp4 is yuv420p, which every browser and player plays, with an odd width or height made even by
    repeating the last column or row; `lossless` writes RGB H.264 at qp 0 instead (High 4:4:4): exact
    pixels, the exact size, fewer players.

        with VideoWriter(path, fps) as out:
            for batch in ...: out.append(frames)
            out.provenance = {...}  # any time before the writer closes

    mp4 frames stream to ffmpeg into a scratch file and are never held; on close the stream is
    copied (not re-encoded) into the target's temporary with the provenance in its metadata, which
    may thus depend on every frame (a roundtrip's metrics). Pillow's GIF encoder needs every frame
    at the end, so a GIF holds its frames as 8-bit images (3 bytes per pixel, a quarter of float
    frames). The target appears only when the writer closes without an error.
    """

    def __init__(self, path: str | Path, fps: float, provenance: dict | None = None, before_replace=None, lossless: bool = False):
        self.path, self.fps, self.provenance, self.before_replace = Path(path), fps, provenance, before_replace
        self.lossless = lossless
        self.is_gif = self.path.suffix.lower() == ".gif"
        self._scratch = contextlib.ExitStack()
        self._stream: Path | None = None
        self._ffmpeg = None
        self._gif_frames: list[Image.Image] = []
        self.frames = 0

    def __enter__(self) -> "VideoWriter":
        if not self.is_gif:
            self._stream = self._scratch.enter_context(scratch_path(self.path.parent, self.path.suffix))
        return self

    def append(self, frames) -> None:
        for a in frames:
            if self.is_gif:
                self._gif_frames.append(Image.fromarray(a, "RGB"))
            else:
                with self._naming_errors():
                    if self._ffmpeg is None:
                        self._ffmpeg = self._open_ffmpeg(a.shape[0], a.shape[1])
                    self._ffmpeg.append_data(a if self.lossless else even_sized(a))
            self.frames += 1

    @contextlib.contextmanager
    def _naming_errors(self):
        """ffmpeg's failures (a full disk shows as a broken pipe) as one line naming the target."""
        try:
            yield
        except (OSError, RuntimeError) as e:
            detail = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
            raise InputError(f"{self.path}: cannot write ({detail})") from None

    def _open_ffmpeg(self, h: int, w: int):
        import imageio.v2 as iio

        if self.lossless:  # every pixel exact (RGB, no chroma subsampling), at any size; H.264 "High 4:4:4", which many players refuse
            return iio.get_writer(self._stream, format="FFMPEG", fps=self.fps, codec="libx264rgb", quality=None, macro_block_size=1,
                                  pixelformat="rgb24", output_params=["-qp", "0"], ffmpeg_log_level="quiet")
        # yuv420p ("High" profile) is what browsers and players accept; it needs even sizes (see even_sized)
        return iio.get_writer(self._stream, format="FFMPEG", fps=self.fps, codec="libx264", quality=8, macro_block_size=1, pixelformat="yuv420p",
                              ffmpeg_log_level="quiet")  # its errors arrive as one exception, never on the terminal

    def _finish(self) -> None:
        if self.frames == 0:
            raise InputError(f"{self.path}: no frames to write")
        with atomic_path(self.path, self.before_replace) as tmp:
            if self.is_gif:
                first, *rest = self._gif_frames
                first.save(tmp, format="GIF", save_all=True, append_images=rest, duration=round(1000 / self.fps), loop=0,
                           **image_save_options("gif", self.provenance))
                return
            writer, self._ffmpeg = self._ffmpeg, None
            with self._naming_errors():
                writer.close()
                _copy_stream(self._stream, tmp, video_output_params(self.provenance))

    def _abort(self) -> None:
        if self._ffmpeg is not None:  # an error mid-stream: stop ffmpeg before its scratch file is removed
            writer, self._ffmpeg = self._ffmpeg, None
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass

    def __exit__(self, kind, error, tb) -> None:
        try:
            if kind is None:
                self._finish()
        finally:
            self._abort()
            self._gif_frames = []
            self._scratch.close()


def even_sized(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> even H and W, as yuv420p needs, by repeating the last row or column: no pixel is lost."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _copy_stream(source: Path, target: Path, params: list[str]) -> None:
    """Copy an mp4's streams unchanged into `target`, with container metadata `params`."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(source), "-map", "0", "-c", "copy", *params, "-f", "mp4", str(target)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise OSError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"ffmpeg exit code {proc.returncode}")
