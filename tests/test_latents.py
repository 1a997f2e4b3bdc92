"""Latent files: metadata round trip, foreign formats, validation errors and freshness for resume."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vaecli.errors import InputError
from vaecli.io.latents import (
    Latent,
    LatentMeta,
    check_channels,
    is_fresh,
    read_latent,
    source_fingerprint,
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


def test_freshness_follows_the_source_and_the_recipe(tmp_path):
    src = tmp_path / "src.png"
    src.write_bytes(b"abc")
    out = tmp_path / "z.safetensors"
    write_latent(out, torch.zeros(4, 2, 2), _meta(**source_fingerprint(src)))
    assert is_fresh(out, src)
    assert is_fresh(out, src, {"model": "m", "scaled": "true", "weights": None})
    assert not is_fresh(out, src, {"model": "other"})  # made by another model: redo
    assert not is_fresh(out, src, {"weights": "/some/file.safetensors"})
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes: still fresh (sha256)
    assert is_fresh(out, src)
    src.write_bytes(b"abd")  # same size, new content
    assert not is_fresh(out, src)
    src.write_bytes(b"abcd")
    assert not is_fresh(out, src)
    out.write_bytes(b"garbage")  # an unreadable output is redone, never trusted
    assert not is_fresh(out, src)
