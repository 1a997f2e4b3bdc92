"""The output-safety rule and freshness, on real files: provenance in every output format, and each verdict of decide()."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from vaecli.batch.freshness import Recipe, SourceHashes, decide, write_guard
from vaecli.errors import InputError
from vaecli.io.hashing import DigestCache, fingerprint
from vaecli.io.images import write_image
from vaecli.io.latents import LatentMeta, write_latent
from vaecli.io.provenance import read_provenance
from vaecli.io.video import VideoWriter

DOC = {"format": 1, "source": {"path": "/data/ünï\ncode [x].png", "size": 3}, "model": {"name": None}, "options": {"a": [1, 2]}}


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.webp", "a.tiff", "a.gif", "a.mp4", "a.safetensors"])
def test_every_output_format_carries_its_provenance(tmp_path, name):
    path = tmp_path / name
    if name.endswith((".mp4", ".gif")):
        with VideoWriter(path, 5.0) as out:
            out.append([np.full((8, 10, 3), 40 * i, np.uint8) for i in range(3)])
            out.provenance = DOC  # known only at the end, as a roundtrip's metrics
    elif name.endswith(".safetensors"):
        meta = LatentMeta(model=None, config="{}", scaling_factor=None, shift_factor=0.0, scaled=False, height=4, width=4,
                          original_height=4, original_width=4)
        write_latent(path, torch.zeros(4, 2, 2), meta, provenance=DOC)
    else:
        write_image(torch.rand(3, 8, 10), path, provenance=DOC)
    assert read_provenance(path) == DOC
    if name.endswith((".png", ".jpg", ".webp", ".tiff", ".gif")):  # still a normal image for every reader
        assert Image.open(path).size == (10, 8)


def test_files_without_our_document_have_no_provenance(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "user.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "user.jpg", comment=b"shot on a phone")
    (tmp_path / "text.png").write_text("not a png")
    big = Image.new("1", (20000, 20000))  # 400 MP: over Pillow's decompression-bomb limit, still cheap to check
    big.save(tmp_path / "big.png", pnginfo=None)
    for name in ("user.png", "user.jpg", "text.png", "big.png", "missing.png"):
        assert read_provenance(tmp_path / name) is None, name


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "in.png"
    path.write_bytes(b"pixels")
    return path


RECIPE = Recipe.of({"name": "m", "weights_sha256": "ab"}, output="image", format="png")


def _judge(source, out, recipe=RECIPE, overwrite=False, needed=()):
    return decide(source, (out,), recipe, overwrite, needed, SourceHashes(), {})


def _write_ours(source, out, recipe=RECIPE, results=None):
    write_image(torch.zeros(3, 2, 2), out, provenance=recipe.document(source, fingerprint(source), results))


def test_new_ours_fresh_and_stale(source, tmp_path):
    out = tmp_path / "out.png"
    assert _judge(source, out).action == "todo"
    _write_ours(source, out, results={"psnr": 30.0})
    d = _judge(source, out)
    assert (d.action, d.recorded) == ("skip", {"psnr": 30.0})
    assert _judge(source, out, needed=("psnr", "lpips")).action == "todo"  # a metric it lacks: measured again
    assert _judge(source, out, overwrite=True).action == "todo"
    assert _judge(source, out, Recipe.of(RECIPE.model, output="image", format="jpg")).action == "todo"  # other options
    assert _judge(source, out, Recipe.of({"name": "m", "weights_sha256": "cd"}, **RECIPE.options)).action == "todo"  # new weights
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes
    assert _judge(source, out).action == "skip"
    source.write_bytes(b"pixelz")  # same size, new bytes
    assert _judge(source, out).action == "todo"


def test_files_that_are_not_ours_are_refused_unless_overwrite(source, tmp_path):
    user = tmp_path / "photo.png"
    Image.new("RGB", (4, 4)).save(user)
    d = _judge(source, user)
    assert d.action == "fail" and "was not written by vaecli" in d.error and "--overwrite" in d.error
    assert _judge(source, user, overwrite=True).action == "todo"
    other = tmp_path / "other.png"
    other.write_bytes(b"another source")
    made = tmp_path / "made.png"
    _write_ours(other, made)
    d = _judge(source, made)
    assert d.action == "fail" and f"made by vaecli from {other.resolve()}" in d.error
    folder = tmp_path / "dir.png"
    folder.mkdir()
    assert _judge(source, folder, overwrite=True).action == "fail"


def test_write_guard_refuses_a_file_that_appeared_during_the_run(source, tmp_path):
    out, seen = tmp_path / "out.png", {}
    assert decide(source, (out,), RECIPE, False, (), SourceHashes(), seen).action == "todo"
    guard = write_guard(source, out, seen, overwrite=False)
    guard()  # still absent: fine
    Image.new("RGB", (4, 4)).save(out)  # a user's file lands there meanwhile
    with pytest.raises(InputError, match="appeared or changed during the run"):
        guard()
    _write_ours(source, out)  # another vaecli run for this same source: fine to replace
    guard()
    write_guard(source, out, seen, overwrite=True)()


def test_weights_digests_are_cached_on_size_and_mtime(tmp_path):
    weights, cache = tmp_path / "w.safetensors", tmp_path / "cache" / "sha.json"
    weights.write_bytes(b"weights v1")
    first = DigestCache(cache).sha256(weights)
    assert first == hashlib.sha256(b"weights v1").hexdigest() and cache.is_file()
    st = weights.stat()
    data = json.loads(cache.read_text())
    data[str(weights.resolve())]["sha256"] = "remembered"  # prove the next process reads the cache, not the file
    cache.write_text(json.dumps(data))
    assert DigestCache(cache).sha256(weights) == "remembered"
    weights.write_bytes(b"weights v2")  # replaced in place: same size, new mtime
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert DigestCache(cache).sha256(weights) == hashlib.sha256(b"weights v2").hexdigest()


def test_a_moved_source_still_owns_its_output(source, tmp_path):
    """A dataset moved with its outputs (or a byte-identical copy): the output is still this source's, and up to date."""
    out = tmp_path / "out.png"
    _write_ours(source, out)
    moved = tmp_path / "elsewhere" / "in.png"
    moved.parent.mkdir()
    source.rename(moved)
    assert _judge(moved, out).action == "skip"
    moved.write_bytes(b"pixelz")  # a different file at the new place: not ours
    assert _judge(moved, out).action == "fail"
