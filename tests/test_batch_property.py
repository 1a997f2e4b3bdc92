"""Property: random folders through encode, decode and roundtrip with random flags never lose a file.

Each example builds a workspace with same-stem images (x.png and x.jpg), sidecars, nested duplicate
names in two roots, a user's files sitting where outputs would go, and output folders inside input
folders; then runs a random sequence of real CLI commands, changing input files between runs. After
every run:

- no file the tool did not write changed (inputs never, even with --overwrite; other user files only
  when --overwrite was given);
- every file in the workspace that is not the user's is a complete vaecli output with provenance
  (no temporaries, no half-written files);
- every input has exactly one result: `ok`/`skipped` with an output made from the input as it is
  now (its provenance names it, with its current sha256), or `failed` with an error naming it.

VAECLI_PROPERTY_EXAMPLES raises the number of examples (default 12, derandomized so CI is stable).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.clitools import run_json

IMAGE_NAMES = ["a.png", "a.jpg", "b.png", "s/a.png", "s/c.jpg", "s/t/a.png"]
SIDECARS = ["a.json", "a.txt", "s/a.caption"]
MEDIA = (".png", ".jpg")
LATENTS = (".safetensors",)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(path)


class Workspace:
    """The user's files (path -> sha256) and the runs made on them."""

    def __init__(self, root: Path, weights: Path):
        self.root, self.weights = root, weights
        self.user: dict[Path, str] = {}

    def put_image(self, rel: str, seed: int) -> None:
        _image(self.root / rel, seed)
        self.user[self.root / rel] = _sha(self.root / rel)

    def put_bytes(self, rel: str, data: bytes) -> None:
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.root / rel).write_bytes(data)
        self.user[self.root / rel] = _sha(self.root / rel)

    def expected_inputs(self, args: list[str], suffixes: tuple[str, ...], out: Path | None) -> set[Path]:
        """What the command must report on: files with a suffix it reads, below folder args, -o excluded when inside."""
        found = set()
        for arg in args:
            folder = Path(arg)
            for p in folder.rglob("*"):
                hidden = any(part.startswith(".") for part in p.relative_to(folder).parts)
                inside_out = out is not None and out.resolve() != folder.resolve() and out.resolve() in p.resolve().parents
                if p.is_file() and p.suffix in suffixes and not hidden and not inside_out:
                    found.add(p.resolve())
        return found

    def check(self, capsys, command: str, args: list[str], out: Path | None, flags: list[str]) -> None:
        from vaecli.io.provenance import (
            read_provenance,  # here, so the test runs (and fails) on a vaecli without it
        )

        suffixes = LATENTS if command == "decode" else MEDIA
        expected = self.expected_inputs(args, suffixes, out)
        inputs_before = {p: _sha(p) for p in expected}
        model = ["--weights", str(self.weights)] if command != "decode" else []
        extra = ["--no-lpips"] if command == "roundtrip" else []
        code, doc, err = run_json(capsys, command, *args, *(["-o", str(out)] if out else []), *model, *flags, *extra)
        assert "internal error" not in err and "Traceback" not in err, err
        if not expected:
            assert code == 2 and not doc
            return
        assert code in (0, 1), err
        reported = [Path(r["input"]).resolve() for r in doc["results"]]
        assert sorted(reported) == sorted(expected)  # each input exactly once
        for r in doc["results"]:
            src = Path(r["input"])
            if r["status"] == "failed":
                assert str(src) in r["error"], r
                continue
            if r["output"] is not None:
                prov = read_provenance(r["output"])
                assert prov["source"]["path"] == str(src.resolve()) and prov["source"]["sha256"] == _sha(src), r
        for p, sha in inputs_before.items():
            assert _sha(p) == sha, f"input {p} changed"
        overwrite = "--overwrite" in flags
        for p, sha in list(self.user.items()):
            if p.resolve() in expected:
                continue
            if overwrite and (not p.exists() or _sha(p) != sha):  # replaced as asked: it is vaecli's now
                del self.user[p]
                continue
            assert p.exists() and _sha(p) == sha, f"user file {p} changed"
        for p in self.root.rglob("*"):
            if p.is_file() and p not in self.user:
                assert not p.name.startswith(".vaecli-tmp-"), p
                assert read_provenance(p) is not None, f"{p}: neither the user's nor a complete vaecli output"


COMMANDS = st.sampled_from(["encode", "decode", "roundtrip", "change"])


@settings(max_examples=int(os.environ.get("VAECLI_PROPERTY_EXAMPLES", 12)), deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_random_folders_and_flags_never_lose_a_file(tmp_path_factory, capsys, cli_weights, data):
    ws = Workspace(tmp_path_factory.mktemp("ws"), cli_weights)
    names = data.draw(st.lists(st.sampled_from(IMAGE_NAMES), min_size=1, max_size=5, unique=True), label="images")
    for i, name in enumerate(names):
        ws.put_image(f"in/{name}", i)
    if data.draw(st.booleans(), label="second root with the same names"):
        for i, name in enumerate(names[:2]):
            ws.put_image(f"in2/{name}", 100 + i)
    for name in data.draw(st.lists(st.sampled_from(SIDECARS), max_size=2, unique=True), label="sidecars"):
        ws.put_bytes(f"in/{name}", b'{"caption": "x"}')
    for rel in data.draw(st.lists(st.sampled_from(["out/a.safetensors", "out/a.png", "in/a.safetensors", "dec/a.png", "in/b.decoded.png"]),
                                  max_size=3, unique=True), label="user files where outputs go"):
        if rel.endswith(".png"):
            ws.put_image(rel, 7)
        else:
            ws.put_bytes(rel, b"the user's own weights, not a latent")
    roots = [str(ws.root / "in")] + ([str(ws.root / "in2")] if (ws.root / "in2").exists() else [])
    for step in range(data.draw(st.integers(2, 4), label="steps")):
        command = data.draw(COMMANDS, label=f"command {step}")
        if command == "change":
            changed = data.draw(st.sampled_from(names), label="changed image")
            ws.put_image(f"in/{changed}", 1000 + step)
            continue
        flags = data.draw(st.lists(st.sampled_from(["--overwrite", "--no-scale", "--sample"] if command == "encode" else
                                                   ["--overwrite", "--format=jpg"] if command == "decode" else ["--overwrite", "--compare"]),
                                   max_size=2, unique=True), label="flags")
        if command == "decode":
            args = [data.draw(st.sampled_from([str(ws.root / "in"), str(ws.root / "out")]), label="latents")]
            out = data.draw(st.sampled_from([None, ws.root / "dec", ws.root / "in"]), label="-o")
        else:
            args = data.draw(st.sampled_from([roots[:1], roots]), label="roots")
            out = data.draw(st.sampled_from([None, ws.root / "out", ws.root / "in" / "out", ws.root / "in"]), label="-o")
        if "--compare" in flags and out is None:
            flags.remove("--compare")
        if all(not Path(a).exists() for a in args):
            continue
        ws.check(capsys, command, args, out, flags)
