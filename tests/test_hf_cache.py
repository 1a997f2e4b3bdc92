"""Weights already in the Hugging Face cache are used where they are: found by repository id or by a registry
entry's URL, checked (pinned sha256, else the hash the cache names each blob by), never downloaded again,
never written to; and `fetch-weights ORG/REPO[/SUBFOLDER]` for what is not there, from a loopback server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.clitools import run_main
from tests.http_server import Route, TestServer
from tests.hub_cache import COMMIT, add_to_hub_cache, tree_state
from tests.reference_models import random_diffusers, wide_photo
from vaecli.batch.models import DIGEST_CACHE_FILE
from vaecli.errors import CheckpointError, RemoteMissingError
from vaecli.io.latents import read_latent
from vaecli.weights import download, hf_cache, locate, registry
from vaecli.weights.registry import Entry, WeightFile
from vaecli.weights.repos import RepoRef

REPO = "tiny-org/tiny-vae"
CONFIG_PATH = "vae/config.json"
WEIGHTS_PATH = "vae/diffusion_pytorch_model.safetensors"
OURS_YAML = "ch: 32\nch_mult: [1, 2, 2, 2]\nnum_res_blocks: 1\nz_channels: 4\nembed_dim: 4\nscaling_factor: 0.5\n"


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory) -> dict[str, bytes]:
    """A random diffusers AutoencoderKL as diffusers saves it, as the files of REPO's vae/ folder."""
    ref = random_diffusers(
        block_out_channels=(32, 64, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        scaling_factor=0.5,
    )
    folder = tmp_path_factory.mktemp("saved")
    ref.save_pretrained(folder, safe_serialization=True)
    return {CONFIG_PATH: (folder / "config.json").read_bytes(), WEIGHTS_PATH: (folder / "diffusion_pytorch_model.safetensors").read_bytes()}


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Empty vaecli and hub caches of this test's own, in this process and for the CLI it starts."""
    values = {"HF_HUB_CACHE": str(tmp_path / "hub"), "VAECLI_CACHE": str(tmp_path / "vaecli-cache"), "VAECLI_RETRY_DELAY": "0.01"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_TOKEN", "VAECLI_OFFLINE", "HF_HUB_OFFLINE", "VAECLI_ENDPOINT", "HF_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)
    return values


@pytest.fixture
def server():
    with TestServer("127.0.0.1") as s:
        yield s


def _cli(*args: str, cwd: Path, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaecli", *args], capture_output=True, text=True, timeout=300, cwd=cwd, env={**os.environ, **(extra or {})})


def _serve_repo(server: TestServer, files: dict[str, bytes], repo: str = REPO) -> None:
    for path, data in files.items():
        server.routes[f"/{repo}/resolve/main/{path}"] = Route(body=data, content_type="application/json" if path.endswith(".json") else "application/octet-stream")


# --- reading the cache ------------------------------------------------------------------------------


def test_fake_cache_layout_is_the_one_huggingface_hub_reads(tmp_path, repo_files):
    """The test cache is realistic: huggingface_hub's own lookup finds the same files ours does."""
    hub = pytest.importorskip("huggingface_hub")
    links = add_to_hub_cache(tmp_path, REPO, repo_files)
    for path, link in links.items():
        assert hub.try_to_load_from_cache(REPO, path, cache_dir=str(tmp_path)) == str(link)
        found = hf_cache.find_file(REPO, path, root=tmp_path)
        assert found.path == link and found.commit == COMMIT
    weights = hf_cache.find_file(REPO, WEIGHTS_PATH, root=tmp_path)
    assert hf_cache.verify_hub_file(weights) == hashlib.sha256(repo_files[WEIGHTS_PATH]).hexdigest()
    assert hf_cache.verify_hub_file(hf_cache.find_file(REPO, CONFIG_PATH, root=tmp_path)) is None  # git sha1 checked, no sha256


def test_hub_cache_folder_follows_huggingface_hub_variables(monkeypatch, tmp_path):
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hf_cache.hub_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_cache.hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert hf_cache.hub_cache_dir() == tmp_path / "hf-home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "explicit"))
    assert hf_cache.hub_cache_dir() == tmp_path / "explicit"


def test_only_the_snapshot_the_ref_names_counts(tmp_path, repo_files):
    """After an update, refs/main names a snapshot without the file: an older snapshot's copy is not used."""
    add_to_hub_cache(tmp_path, REPO, repo_files, commit="f" * 40, revision=None)  # an older snapshot, complete
    add_to_hub_cache(tmp_path, REPO, {CONFIG_PATH: repo_files[CONFIG_PATH]})  # main: the config only
    assert hf_cache.find_file(REPO, WEIGHTS_PATH, root=tmp_path) is None
    assert hf_cache.find_file(REPO, WEIGHTS_PATH, revision="f" * 40, root=tmp_path) is not None


# --- encode from the cache (the real CLI) --------------------------------------------------------------


def test_encode_repo_id_from_hub_cache_equals_weights_file(tmp_path, env, repo_files, server):
    """`--model ORG/REPO/vae` reads the cached folder in place: same latents as --weights of the same file,
    no request to the hub (its endpoint is a server that counts), nothing written into the cache."""
    links = add_to_hub_cache(Path(env["HF_HUB_CACHE"]), REPO, repo_files)
    Image.fromarray(wide_photo(57, 1029)).save(tmp_path / "photo.png")
    (tmp_path / "ours.yaml").write_text(OURS_YAML)
    before = tree_state(Path(env["HF_HUB_CACHE"]))
    endpoint = {"VAECLI_ENDPOINT": server.url("")}

    a = _cli("encode", "photo.png", "--model", f"{REPO}/vae", "--device", "cpu", "-o", "by-repo", cwd=tmp_path, extra=endpoint)
    assert a.returncode == 0, a.stderr
    b = _cli("encode", "photo.png", "--weights", str(links[WEIGHTS_PATH]), "--config", "ours.yaml", "--device", "cpu", "-o", "by-file", cwd=tmp_path)
    assert b.returncode == 0, b.stderr
    got, want = (read_latent(tmp_path / d / "photo.safetensors") for d in ("by-repo", "by-file"))
    assert got.tensor.shape == (4, 8, 129) and (got.tensor - want.tensor).abs().max() <= 1e-6
    assert got.meta.model == f"{REPO}/vae" and got.meta.scaling_factor == 0.5
    assert server.seen == [] and tree_state(Path(env["HF_HUB_CACHE"])) == before
    cached = [p.name for p in Path(env["VAECLI_CACHE"]).rglob("*") if p.is_file()]
    assert cached == [DIGEST_CACHE_FILE]  # no second copy anywhere: only the weights' sha256, remembered for freshness
    for want in ("ok", "skipped"):  # decode loads the repository the latent names, and knows its output is fresh
        d = _cli("decode", "by-repo", "--json", cwd=tmp_path, extra=endpoint)
        assert d.returncode == 0 and [r["status"] for r in json.loads(d.stdout)["results"]] == [want], d.stderr


def test_corrupt_cached_weights_are_refused_in_one_line(tmp_path, env, repo_files):
    """A blob whose bytes no longer match its name (the sha256 of the good file) is not used."""
    bad = bytearray(repo_files[WEIGHTS_PATH])
    bad[-5] ^= 0xFF
    good_sha = hashlib.sha256(repo_files[WEIGHTS_PATH]).hexdigest()
    add_to_hub_cache(Path(env["HF_HUB_CACHE"]), REPO, {**repo_files, WEIGHTS_PATH: bytes(bad)}, etags={WEIGHTS_PATH: good_sha})
    Image.fromarray(wide_photo(40, 48)).save(tmp_path / "p.png")
    p = _cli("encode", "p.png", "--model", f"{REPO}/vae", "--device", "cpu", "-o", "out", cwd=tmp_path)
    assert p.returncode == 2 and "corrupt or altered, so it is not used" in p.stderr and good_sha in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_corrupt_cached_config_is_refused(tmp_path, env, repo_files):
    config = json.loads(repo_files[CONFIG_PATH])
    config["latent_channels"] = 8  # edited in place: no longer the bytes its git hash names
    add_to_hub_cache(Path(env["HF_HUB_CACHE"]), REPO, {**repo_files, CONFIG_PATH: json.dumps(config).encode()}, etags={CONFIG_PATH: "a" * 40})
    with pytest.raises(CheckpointError, match="does not match its git hash"):
        locate.locate(f"{REPO}/vae")


def test_missing_everywhere_names_the_fetch_command(tmp_path, env):
    p = _cli("encode", "x.png", "--model", f"{REPO}/vae", "--device", "cpu", cwd=tmp_path)
    assert p.returncode == 2 and f"run: vaecli fetch-weights {REPO}/vae" in p.stderr and "Hugging Face cache" in p.stderr


# --- fetch-weights ORG/REPO[/SUBFOLDER] ------------------------------------------------------------------


def test_fetch_repo_in_hub_cache_makes_no_request(tmp_path, env, repo_files, server):
    _serve_repo(server, repo_files)  # would answer, if asked
    links = add_to_hub_cache(Path(env["HF_HUB_CACHE"]), REPO, repo_files)
    p = _cli("fetch-weights", f"{REPO}/vae", "--json", cwd=tmp_path, extra={"VAECLI_ENDPOINT": server.url("")})
    assert p.returncode == 0, p.stderr
    files = json.loads(p.stdout)["models"][0]["files"]
    assert [(f["path"], f["status"]) for f in files] == [(str(links[CONFIG_PATH]), "hf-cache"), (str(links[WEIGHTS_PATH]), "hf-cache")]
    assert server.seen == [] and not Path(env["VAECLI_CACHE"]).exists()


def test_fetch_repo_downloads_then_encode_uses_it_offline(tmp_path, env, repo_files, server):
    """With nothing cached the same command downloads (the server sees the requests, the token goes to the
    configured hub endpoint), into vaecli's cache with the sha256 recorded; encode then needs no network."""
    _serve_repo(server, repo_files)
    extra = {"VAECLI_ENDPOINT": server.url(""), "HF_TOKEN": "hf_TestTokenForTheMirror1234"}
    p = _cli("fetch-weights", f"{REPO}/vae", cwd=tmp_path, extra=extra)
    assert p.returncode == 0, p.stderr
    gets = [s for s in server.seen if s.method == "GET"]
    assert sorted(s.path for s in gets) == sorted(f"/{REPO}/resolve/main/{f}" for f in repo_files)
    assert all(s.headers.get("Authorization") == "Bearer hf_TestTokenForTheMirror1234" for s in gets)
    folder = Path(env["VAECLI_CACHE"]) / "hf" / "tiny-org--tiny-vae" / "vae"
    weights = folder / "diffusion_pytorch_model.safetensors"
    assert weights.read_bytes() == repo_files[WEIGHTS_PATH]
    assert (folder / "diffusion_pytorch_model.safetensors.sha256").read_text().split()[0] == hashlib.sha256(repo_files[WEIGHTS_PATH]).hexdigest()

    Image.fromarray(wide_photo(40, 48)).save(tmp_path / "p.png")
    e = _cli("encode", "p.png", "--model", f"{REPO}/vae", "--device", "cpu", "-o", "out", cwd=tmp_path, extra={"VAECLI_OFFLINE": "1"})
    assert e.returncode == 0, e.stderr
    assert locate.locate(f"{REPO}/vae").source == locate.VAECLI_CACHE


def test_fetch_repo_takes_the_fp16_variant_when_that_is_all_there_is(monkeypatch, tmp_path, env, repo_files, server):
    fp16 = WEIGHTS_PATH.replace(".safetensors", ".fp16.safetensors")
    _serve_repo(server, {CONFIG_PATH: repo_files[CONFIG_PATH], fp16: repo_files[WEIGHTS_PATH]})
    monkeypatch.setenv("VAECLI_ENDPOINT", server.url(""))
    results = download.fetch_repo(RepoRef.parse(f"{REPO}/vae"))
    assert [r.path.name for r in results] == ["config.json", "diffusion_pytorch_model.fp16.safetensors"]
    assert [s.path for s in server.seen if s.method == "GET"][-2:] == [f"/{REPO}/resolve/main/{WEIGHTS_PATH}", f"/{REPO}/resolve/main/{fp16}"]
    assert locate.locate(f"{REPO}/vae").weights == results[1].path


def test_fetch_repo_without_weights_says_what_it_looked_for(monkeypatch, tmp_path, env, repo_files, server):
    _serve_repo(server, {CONFIG_PATH: repo_files[CONFIG_PATH]})
    monkeypatch.setenv("VAECLI_ENDPOINT", server.url(""))
    with pytest.raises(RemoteMissingError, match="none of diffusion_pytorch_model.safetensors"):
        download.fetch_repo(RepoRef.parse(f"{REPO}/vae"))


def test_fetch_replaces_a_corrupt_hub_copy_with_a_verified_download(tmp_path, env, repo_files, server):
    _serve_repo(server, repo_files)
    bad = repo_files[WEIGHTS_PATH][:-1] + b"\x00"
    add_to_hub_cache(Path(env["HF_HUB_CACHE"]), REPO, {**repo_files, WEIGHTS_PATH: bad}, etags={WEIGHTS_PATH: hashlib.sha256(repo_files[WEIGHTS_PATH]).hexdigest()})
    before = tree_state(Path(env["HF_HUB_CACHE"]))
    p = _cli("fetch-weights", f"{REPO}/vae", cwd=tmp_path, extra={"VAECLI_ENDPOINT": server.url("")})
    assert p.returncode == 0, p.stderr
    assert "Warning" in p.stderr and "corrupt or altered" in p.stderr and "downloading a copy" in p.stderr
    assert tree_state(Path(env["HF_HUB_CACHE"])) == before  # the bad copy is left for its owner
    assert locate.locate(f"{REPO}/vae").source == locate.VAECLI_CACHE


# --- registry entries: a pinned hash --------------------------------------------------------------------


@pytest.fixture
def pinned_entry(monkeypatch, repo_files):
    """A registry whose one model is REPO's weights file, pinned by sha256 (the real entries pin real files)."""
    data = repo_files[WEIGHTS_PATH]
    wf = WeightFile(
        filename="diffusion_pytorch_model.safetensors",
        urls=(f"https://huggingface.co/{REPO}/resolve/main/{WEIGHTS_PATH}",),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )
    entry = Entry(name="tiny-pinned", config="sd-vae-ft-mse", files=(wf,), layout="diffusers")
    monkeypatch.setattr(registry, "load_registry", lambda: {"tiny-pinned": entry})
    return entry


def test_registry_file_found_in_hub_cache_is_checked_against_its_pin(monkeypatch, env, repo_files, pinned_entry, server):
    links = add_to_hub_cache(Path(env["HF_HUB_CACHE"]), REPO, repo_files)
    found = locate.locate("tiny-pinned")
    assert (found.source, found.weights, found.sha256) == (locate.HF_CACHE, links[WEIGHTS_PATH], pinned_entry.files[0].sha256)
    monkeypatch.setenv("VAECLI_ENDPOINT", server.url(""))
    [result] = download.fetch_entry(pinned_entry)
    assert (result.status, result.path) == ("hf-cache", links[WEIGHTS_PATH]) and server.seen == []


def test_registry_file_with_a_wrong_hash_in_hub_cache_is_refused_then_downloaded(monkeypatch, env, repo_files, pinned_entry, server):
    """The cache's own name for the blob agrees with its bytes here: only the registry's pin shows it is another file."""
    other = repo_files[WEIGHTS_PATH][:-1] + b"\x01"
    add_to_hub_cache(Path(env["HF_HUB_CACHE"]), REPO, {WEIGHTS_PATH: other})
    with pytest.raises(CheckpointError, match="pinned for it"):
        locate.locate("tiny-pinned")
    _serve_repo(server, {WEIGHTS_PATH: repo_files[WEIGHTS_PATH]})
    monkeypatch.setenv("VAECLI_ENDPOINT", server.url(""))
    [result] = download.fetch_entry(pinned_entry)
    assert result.status == "downloaded" and "corrupt or altered" in result.note
    assert locate.locate("tiny-pinned").source == locate.VAECLI_CACHE


def test_models_says_where_each_models_weights_were_found(env, repo_files, pinned_entry, capsys):
    """`vaecli models`: missing, then the Hugging Face cache's own file once it is there; the embedded default in the package."""

    def rows() -> dict[str, dict]:
        code, out, _ = run_main(capsys, "models", "--json")
        assert code == 0
        return {r["name"]: r for r in json.loads(out)["models"]}

    before = rows()
    assert (before["tiny-pinned"]["found"], before["tiny-pinned"]["path"]) == (None, None)
    assert (before["vaecli-default"]["found"], Path(before["vaecli-default"]["path"])) == ("package", registry.embedded_weights_path())
    links = add_to_hub_cache(Path(env["HF_HUB_CACHE"]), REPO, repo_files)
    after = rows()["tiny-pinned"]
    assert (after["found"], after["path"], after["cached"]) == ("hf-cache", str(links[WEIGHTS_PATH]), True)


def _wrong_copy_in_hub_cache(env, repo_files) -> Path:
    """The registry file's place in the hub cache holds another file (its blob name is its own sha256, not the pin)."""
    return add_to_hub_cache(Path(env["HF_HUB_CACHE"]), REPO, {WEIGHTS_PATH: repo_files[WEIGHTS_PATH][:-1] + b"\x01"})[WEIGHTS_PATH]


def test_models_does_not_call_a_copy_that_fails_its_pin_found(monkeypatch, env, repo_files, pinned_entry, capsys):
    monkeypatch.setenv("COLUMNS", "200")  # a table cell on one line
    link = _wrong_copy_in_hub_cache(env, repo_files)
    code, out, _ = run_main(capsys, "models", "--json")
    row = {r["name"]: r for r in json.loads(out)["models"]}["tiny-pinned"]
    assert code == 0 and (row["found"], row["cached"], row["path"]) == ("hf-cache", False, str(link))
    assert "pinned for it" in row["problem"] and str(link) in row["problem"]
    code, out, _ = run_main(capsys, "models")
    assert code == 0 and "hf-cache (sha256 mismatch)" in out


def test_fetch_verify_checks_the_hub_cache_copy(env, repo_files, pinned_entry, capsys):
    link = _wrong_copy_in_hub_cache(env, repo_files)
    code, _, err = run_main(capsys, "fetch-weights", "tiny-pinned", "--verify")
    assert code == 1 and err.count("\n") == 1 and f"{link} (Hugging Face cache of {REPO})" in err and "pinned for it" in err, err
    assert "not downloaded" not in err and not Path(env["VAECLI_CACHE"]).exists()


def test_an_offline_fetch_after_a_refused_hub_copy_says_why_it_needed_the_network(monkeypatch, env, repo_files, pinned_entry, capsys):
    link = _wrong_copy_in_hub_cache(env, repo_files)
    monkeypatch.setenv("VAECLI_OFFLINE", "1")
    code, _, err = run_main(capsys, "fetch-weights", "tiny-pinned")
    assert code == 1 and err.count("\n") == 1 and "offline mode is on" in err, err
    assert "because the Hugging Face cache's copy was refused" in err and str(link) in err and "pinned for it" in err


def test_a_broken_link_in_the_hub_cache_is_named_and_fetch_weights_gives_a_copy(tmp_path, env, repo_files, server):
    """A snapshot entry whose blob is gone is no 'not in the cache': it is named, with the ways out; the
    fetch-weights way is true (it downloads into vaecli's cache, looked at first), the hub cache stays untouched."""
    links = add_to_hub_cache(Path(env["HF_HUB_CACHE"]), REPO, repo_files)
    links[WEIGHTS_PATH].resolve().unlink()
    Image.fromarray(wide_photo(40, 48)).save(tmp_path / "p.png")
    p = _cli("encode", "p.png", "--model", f"{REPO}/vae", "--device", "cpu", "-o", "out", cwd=tmp_path)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert f"{links[WEIGHTS_PATH]} (Hugging Face cache of {REPO}): a broken link" in p.stderr and "not in vaecli's cache" not in p.stderr
    assert "hf download" in p.stderr and "vaecli fetch-weights" in p.stderr and not (tmp_path / "out").exists()
    before = tree_state(Path(env["HF_HUB_CACHE"]))
    _serve_repo(server, repo_files)
    p = _cli("fetch-weights", f"{REPO}/vae", cwd=tmp_path, extra={"VAECLI_ENDPOINT": server.url("")})
    assert p.returncode == 0 and "broken link" in p.stderr, p.stderr
    p = _cli("encode", "p.png", "--model", f"{REPO}/vae", "--device", "cpu", "-o", "out", cwd=tmp_path, extra={"VAECLI_OFFLINE": "1"})
    assert p.returncode == 0, p.stderr
    assert tree_state(Path(env["HF_HUB_CACHE"])) == before


def test_models_names_a_broken_link(monkeypatch, env, repo_files, pinned_entry, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    links = add_to_hub_cache(Path(env["HF_HUB_CACHE"]), REPO, repo_files)
    links[WEIGHTS_PATH].resolve().unlink()
    code, out, _ = run_main(capsys, "models")
    assert code == 0 and "hf-cache (broken link)" in out
