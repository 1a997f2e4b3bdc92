"""Image reading: every Pillow mode to RGB in [0, 1], EXIF, 16-bit precision, and per-file errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vaecli.errors import InputError
from vaecli.io.images import (
    SizeSpec,
    pad_to_multiple,
    read_image,
    resize_and_crop,
    write_image,
)


def test_alpha_is_composited_over_the_chosen_background(tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0] = 200  # red channel
    rgba[0, 0, 3] = 0  # transparent
    rgba[0, 1, 3] = 255  # opaque
    rgba[0, 2, 3] = 51  # 20 % opaque
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    white, black = read_image(path, alpha="white"), read_image(path, alpha="black")
    assert white.shape == (3, 4, 6) and white.dtype == torch.float32
    assert torch.allclose(white[:, 0, 0], torch.ones(3)) and torch.allclose(black[:, 0, 0], torch.zeros(3))
    assert torch.allclose(white[:, 0, 1], black[:, 0, 1])
    a = 51 / 255
    assert white[0, 0, 2] == pytest.approx(200 / 255 * a + (1 - a), abs=1e-6)
    assert black[1, 0, 2] == pytest.approx(0.0, abs=1e-6)


def test_16_bit_grayscale_keeps_its_precision(tmp_path):
    values = np.array([[0, 1000, 1001, 65535]], np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    x = read_image(path)
    assert x.shape == (3, 1, 4)
    assert torch.allclose(x[0, 0].double(), torch.tensor(values[0] / 65535.0), atol=1e-7)
    assert x[0, 0, 1] != x[0, 0, 2]  # 1000 and 1001 would collapse through 8 bits


@pytest.mark.parametrize("mode", ["L", "P", "LA", "CMYK", "1", "I;16"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    img = Image.new("RGB", (9, 7), (10, 120, 250)).convert(mode)
    path = tmp_path / ("x.tiff" if mode == "CMYK" else "x.png")
    img.save(path)
    x = read_image(path)
    assert x.shape == (3, 7, 9) and 0 <= x.min() and x.max() <= 1


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (20, 10), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 5, 10))  # blue strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "r.jpg"
    img.save(path, exif=exif, quality=100)
    x = read_image(path)
    assert x.shape == (3, 20, 10)
    assert x[2, 0, 5] > 0.8 and x[0, -1, 5] > 0.8  # blue moved to the top, red at the bottom


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    path = tmp_path / "a.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert read_image(path)[0].mean() > 0.9


def test_bad_files_fail_alone_with_their_name(tmp_path, monkeypatch):
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good)
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(good.read_bytes()[:60])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    for path, cause in ((truncated, "truncated"), (empty, "empty"), (text, "not an image")):
        with pytest.raises(InputError, match=cause) as e:
            read_image(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64*64 = 4096 > 1000: Pillow only warns below 2x
    with pytest.raises(InputError, match="decompression bomb"):
        read_image(good)


def test_padding_reflects_and_falls_back_to_replicate():
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(2, 5, 7)
    y, how = pad_to_multiple(x, 4)
    assert y.shape == (2, 8, 8) and torch.equal(y[:, :5, :7], x) and "reflect" in how
    assert torch.equal(y[:, 5, :7], x[:, 3]) and torch.equal(y[:, :5, 7], x[:, :, 5])  # reflect: mirror without the edge
    thin = torch.rand(3, 1, 3)
    z, how = pad_to_multiple(thin, 8)
    assert z.shape == (3, 8, 8) and "replicate" in how and torch.equal(z[:, 7, :3], thin[:, 0])
    assert pad_to_multiple(torch.rand(3, 8, 8), 8)[1] == ""


def test_resize_and_center_crop():
    x = torch.rand(3, 60, 90)
    y, how = resize_and_crop(x, SizeSpec.parse("30", False), 8)
    assert y.shape == (3, 30, 45) and "resize" in how
    y, _ = resize_and_crop(x, SizeSpec.parse("32", True), 8)
    assert y.shape == (3, 32, 32)
    y, _ = resize_and_crop(x, SizeSpec.parse("40x16", True), 8)
    assert y.shape == (3, 16, 40)
    y, _ = resize_and_crop(x, SizeSpec.parse("40x16", False), 8)
    assert y.shape == (3, 16, 40)
    y, how = resize_and_crop(x, SizeSpec.parse(None, True), 16)
    assert y.shape == (3, 48, 80) and torch.equal(y, x[:, 6:54, 5:85]) and "center-crop" in how
    with pytest.raises(ValueError, match="--resize"):
        SizeSpec.parse("0x5", False)


def test_write_image_roundtrip_is_exact_for_png(tmp_path):
    x = torch.randint(0, 256, (3, 5, 7)).float() / 255
    write_image(x, tmp_path / "o.png")
    assert torch.allclose(read_image(tmp_path / "o.png"), x, atol=1e-7)
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]  # no temporary left behind
