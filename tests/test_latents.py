"""Latent files: metadata round trip, foreign formats, and validation of untrusted files field by field."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vaecli.errors import InputError
from vaecli.io.latents import (
    Latent,
    LatentHeader,
    LatentMeta,
    check_channels,
    check_geometry,
    peek_latent,
    read_latent,
    write_latent,
)


def _meta(**kw) -> LatentMeta:
    base = dict(model="m", config="{}", scaling_factor=0.5, shift_factor=0.1, scaled=True, height=30, width=41, original_height=30, original_width=41)
    return LatentMeta(**(base | kw))


def test_write_then_read_keeps_tensor_and_metadata(tmp_path):
    z = torch.randn(4, 8, 11)
    meta = _meta(seed=7, posterior="sample", fps=12.5, frames=3, size_handling="pad reflect right=3 bottom=2 to 44x32")
    write_latent(tmp_path / "z.safetensors", z, meta, mean=z + 1, logvar=z - 1)
    lat = read_latent(tmp_path / "z.safetensors")
    assert torch.equal(lat.tensor, z)
    assert lat.meta.to_strings() == meta.to_strings()
    assert lat.meta.scaled is True and lat.meta.seed == 7 and lat.meta.fps == 12.5
    assert [p.name for p in tmp_path.iterdir()] == ["z.safetensors"]


def test_foreign_formats(tmp_path):
    z = torch.randn(1, 4, 6, 6)
    np.save(tmp_path / "a.npy", z.numpy())
    torch.save(z[0], tmp_path / "b.pt")
    save_file({"whatever": z[0].contiguous()}, str(tmp_path / "c.safetensors"))
    save_file({"latents": z[0].clone(), "other": z[0].clone()}, str(tmp_path / "d.safetensors"))
    for name in ("a.npy", "b.pt", "c.safetensors", "d.safetensors"):
        lat = read_latent(tmp_path / name)
        assert lat.meta is None and torch.equal(lat.tensor, z[0]), name


@pytest.mark.parametrize(
    "make, cause",
    [
        (lambda p: save_file({"latent": torch.tensor([[[float("nan")]]])}, str(p / "x.safetensors")), "NaN or inf"),
        (lambda p: torch.save({"a": torch.ones(1)}, p / "x.pt"), "expected a single tensor"),
        (lambda p: np.save(p / "x.npy", np.ones((2, 3), np.float32)), "expected \\[C,h,w\\]"),
        (lambda p: (p / "x.safetensors").write_bytes(b""), "empty"),
        (lambda p: (p / "x.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":"), "unreadable or truncated"),
        (lambda p: save_file({"a": torch.ones(1, 2, 2, 2), "b": torch.ones(1)}, str(p / "x.safetensors")), "no tensor named"),
    ],
)
def test_bad_latents_fail_with_the_file_name(tmp_path, make, cause):
    make(tmp_path)
    (path,) = tmp_path.iterdir()
    with pytest.raises(InputError, match=cause) as e:
        read_latent(path)
    assert str(path) in str(e.value)


def test_no_scale_latent_equal_to_the_mean_is_writable(tmp_path):
    mean = torch.randn(2, 4, 3, 3)
    write_latent(tmp_path / "z.safetensors", mean[1], _meta(scaled=False), mean=mean[1], logvar=mean[0])
    assert torch.equal(read_latent(tmp_path / "z.safetensors").tensor, mean[1])


def test_channel_check_names_both_counts(tmp_path):
    with pytest.raises(InputError, match="has 16 channels but the model expects 4"):
        check_channels(Latent(torch.zeros(16, 2, 2), None, tmp_path / "z.npy"), 4)


@pytest.mark.parametrize(
    "key, value, why",
    [
        ("scaling_factor", "0", "positive finite"),
        ("scaling_factor", "nan", "positive finite"),
        ("scaling_factor", "-0.18", "positive finite"),
        ("shift_factor", "inf", "finite number"),
        ("height", "-30", "integer in"),
        ("width", "0", "integer in"),
        ("width", "1e9", "not an integer"),
        ("original_height", "99999999", "integer in"),
        ("scaled", "maybe", "one of true, false"),
        ("posterior", "median", "one of mode, sample"),
        ("config", "[1, 2]", "not a JSON object"),
        ("fps", "-25", "positive finite"),
        ("frames", "0", "integer in"),
        ("seed", "three", "not an integer"),
    ],
)
def test_every_metadata_field_is_checked_on_read(tmp_path, key, value, why):
    """A shared latent is untrusted: a bad field is one error naming the file and the field, never a silent crop or black image."""
    path = tmp_path / "z.safetensors"
    strings = _meta().to_strings() | {key: value}
    save_file({"latent": torch.zeros(4, 4, 6)}, str(path), metadata=strings)
    for read in (read_latent, peek_latent):
        with pytest.raises(InputError, match=why) as e:
            read(path)
        assert str(path) in str(e.value) and f"field {key}=" in str(e.value) and "\n" not in str(e.value)


def test_recorded_size_must_fit_the_latent(tmp_path):
    """height/width say where decode crops: they must be what the padded latent decodes to."""
    header = LatentHeader((4, 4, 6), _meta(height=30, width=41))  # 30 -> 4 cells and 41 -> 6 cells at factor 8
    check_geometry(tmp_path / "z.safetensors", header.shape, header.meta, 8)
    for bad in (dict(height=20), dict(width=60)):
        with pytest.raises(InputError, match="does not fit a latent"):
            check_geometry(tmp_path / "z.safetensors", header.shape, _meta(**bad), 8)


def test_peek_reads_the_shape_that_read_returns(tmp_path):
    z = torch.randn(1, 4, 6, 6)
    np.save(tmp_path / "a.npy", z.numpy())
    torch.save(z[0], tmp_path / "b.pt")
    write_latent(tmp_path / "c.safetensors", torch.randn(3, 4, 5, 6), _meta(fps=10.0, frames=3))
    for name in ("a.npy", "b.pt", "c.safetensors"):
        header, latent = peek_latent(tmp_path / name), read_latent(tmp_path / name)
        assert header.shape == tuple(latent.tensor.shape) and header.is_video == latent.is_video, name
    assert peek_latent(tmp_path / "c.safetensors").meta.fps == 10.0


def test_latents_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_latent(tmp_path / "z.safetensors", torch.zeros(4, 2, 2), _meta())
    finally:
        os.umask(old)
    assert (tmp_path / "z.safetensors").stat().st_mode & 0o777 == 0o640  # safetensors' own writer makes 0600
