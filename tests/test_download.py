"""fetch-weights and the downloader, against a real HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.http_server import Route, TestServer
from vaecli.cli.app import main
from vaecli.errors import DownloadError, OfflineError
from vaecli.weights import download, transfer
from vaecli.weights.download import fetch_file
from vaecli.weights.registry import WeightFile, get_entry
from vaecli.weights.transfer import RetryPolicy

FAST = RetryPolicy(retries=3, base_delay=0.01, connect_timeout=5, read_timeout=5)
TOKEN = "hf_SeCrEtToKeN1234567890"
SD35_PATH = "/stabilityai/stable-diffusion-3.5-large/resolve/main/vae/diffusion_pytorch_model.safetensors"
_ENV_VARS = ("HF_TOKEN", "VAECLI_OFFLINE", "HF_HUB_OFFLINE", "VAECLI_ENDPOINT", "HF_ENDPOINT", "VAECLI_CACHE", "VAECLI_DEBUG")


@pytest.fixture(scope="module")
def payload() -> bytes:
    """2 MiB of random bytes: big enough to stream in many chunks, small enough to be instant."""
    return random.Random(0).randbytes(2 << 20)


@pytest.fixture
def sha(payload) -> str:
    return hashlib.sha256(payload).hexdigest()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for var in _ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("VAECLI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VAECLI_RETRY_DELAY", "0.01")


@pytest.fixture
def server():
    with TestServer("127.0.0.1") as s:
        yield s


def wf_for(url: str, payload: bytes | None = None, **kw) -> WeightFile:
    pins = {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)} if payload is not None else {}
    pins.update(kw)
    return WeightFile(filename="w.safetensors", urls=(url,), **pins)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The installed `vaecli` executable, in a clean environment plus `env`."""
    exe = shutil.which("vaecli") or str(Path(sys.executable).parent / "vaecli")
    full = {k: v for k, v in os.environ.items() if k not in _ENV_VARS[:5]}
    full.update(env or {})
    return subprocess.run([exe, "fetch-weights", *args], capture_output=True, text=True, env=full, timeout=timeout)


# --- a good file ------------------------------------------------------------------------------


def test_good_file_lands_verified_and_second_fetch_makes_no_request(server, payload, sha, tmp_path):
    server.routes["/w.safetensors"] = Route(body=payload)
    dest = tmp_path / "m" / "w.safetensors"
    wf = wf_for(server.url("/w.safetensors"), payload)
    first = fetch_file(wf, dest, policy=FAST)
    assert first.status == "downloaded" and first.sha256 == sha
    assert dest.read_bytes() == payload
    assert leftovers(dest.parent) == ["w.safetensors"]  # no partial, no lock, no recorded hash (pinned)
    n_seen = len(server.seen)
    second = fetch_file(wf, dest, policy=FAST)
    assert second.status == "cached" and len(server.seen) == n_seen


def test_verify_detects_a_file_altered_on_disk(server, payload, tmp_path):
    server.routes["/w.safetensors"] = Route(body=payload)
    dest = tmp_path / "w.safetensors"
    wf = wf_for(server.url("/w.safetensors"), payload)
    fetch_file(wf, dest, policy=FAST)
    assert fetch_file(wf, dest, verify=True).status == "verified"
    data = bytearray(payload)
    data[12345] ^= 0xFF  # same size: only the hash can tell
    dest.write_bytes(bytes(data))
    assert fetch_file(wf, dest).status == "cached"  # a plain fetch only checks the size
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch_file(wf, dest, verify=True)


def test_unpinned_file_records_its_sha256_and_later_verifies_against_it(server, payload, sha, tmp_path):
    server.routes["/w.safetensors"] = Route(body=payload)
    dest = tmp_path / "w.safetensors"
    wf = WeightFile(filename="w.safetensors", urls=(server.url("/w.safetensors"),))
    fetch_file(wf, dest, policy=FAST)
    assert (tmp_path / "w.safetensors.sha256").read_text().split() == [sha, "w.safetensors"]
    dest.write_bytes(payload[:-1] + b"\0")
    with pytest.raises(DownloadError, match=f"expected {sha}"):
        fetch_file(wf, dest, verify=True)


# --- bad files are never kept -------------------------------------------------------------------

HTML = b"<!DOCTYPE html><html><body>Please log in</body></html>" * 100


@pytest.mark.parametrize(
    "route_kw, pins, cause",
    [
        ({}, {"sha256": "0" * 64}, "sha256 mismatch"),
        ({}, {"size": 12345}, "expected 12345"),
        ({"body": HTML, "content_type": "text/html; charset=utf-8"}, {"sha256": None, "size": None}, "text/html"),
        ({"body": HTML, "content_type": "application/octet-stream"}, {"sha256": None, "size": None}, "HTML page"),
    ],
    ids=["wrong-hash", "wrong-size", "html-content-type", "html-body"],
)
def test_a_bad_file_fails_and_leaves_nothing(server, payload, tmp_path, route_kw, pins, cause):
    body = route_kw.pop("body", payload)
    server.routes["/w.safetensors"] = Route(body=body, **route_kw)
    dest = tmp_path / "m" / "w.safetensors"
    wf = wf_for(server.url("/w.safetensors"), payload)
    wf = WeightFile(**{**wf.__dict__, **pins})
    policy = RetryPolicy(retries=0, base_delay=0.01, read_timeout=5)
    with pytest.raises(DownloadError, match=cause):
        fetch_file(wf, dest, policy=policy)
    assert leftovers(dest.parent) == []


def test_not_enough_disk_space_fails_before_the_body(server, payload, tmp_path, monkeypatch):
    server.routes["/w.safetensors"] = Route(body=payload)
    monkeypatch.setattr(transfer, "DISK_MARGIN", shutil.disk_usage(tmp_path).free)  # the real free space, all reserved
    with pytest.raises(DownloadError, match="not enough disk space"):
        fetch_file(wf_for(server.url("/w.safetensors"), payload), tmp_path / "w.safetensors", policy=FAST)
    assert leftovers(tmp_path) == []


# --- resume, restart, retry ---------------------------------------------------------------------


def test_dropped_connection_resumes_with_range_and_hash_matches(server, payload, sha, tmp_path):
    half = len(payload) // 2
    server.routes["/w.safetensors"] = Route(body=payload, drop_after=half)
    dest = tmp_path / "w.safetensors"
    result = fetch_file(wf_for(server.url("/w.safetensors"), payload), dest, policy=FAST)
    gets = server.requests_for("/w.safetensors")
    assert [g.headers.get("Range") for g in gets] == [None, f"bytes={half}-"]
    assert result.sha256 == sha and dest.read_bytes() == payload


def test_server_ignoring_range_restarts_cleanly(server, payload, sha, tmp_path):
    server.routes["/w.safetensors"] = Route(body=payload, drop_after=len(payload) // 3, ranges=False)
    dest = tmp_path / "w.safetensors"
    result = fetch_file(wf_for(server.url("/w.safetensors"), payload), dest, policy=FAST)
    gets = server.requests_for("/w.safetensors")
    assert len(gets) == 2 and gets[1].headers.get("Range", "").startswith("bytes=")  # asked to resume, got 200
    assert result.sha256 == sha and dest.read_bytes() == payload


def test_retries_exhausted_keep_the_partial_and_the_next_run_resumes(server, payload, tmp_path):
    quarter = len(payload) // 4
    route = Route(body=payload, drop_after=quarter, drops=2, ranges=False)
    server.routes["/w.safetensors"] = route
    dest = tmp_path / "w.safetensors"
    wf = wf_for(server.url("/w.safetensors"), payload)
    with pytest.raises(DownloadError, match="rerun to resume"):
        fetch_file(wf, dest, policy=RetryPolicy(retries=1, base_delay=0.01, read_timeout=5))
    assert (tmp_path / "w.safetensors.partial").stat().st_size == quarter
    route.ranges = True
    fetch_file(wf, dest, policy=FAST)
    assert server.requests_for("/w.safetensors")[-1].headers.get("Range") == f"bytes={quarter}-"
    assert dest.read_bytes() == payload and leftovers(tmp_path) == ["w.safetensors"]


def test_500_then_200_is_retried(server, payload, tmp_path):
    server.routes["/w.safetensors"] = Route(body=payload, fail_first=[500, 503])
    dest = tmp_path / "w.safetensors"
    fetch_file(wf_for(server.url("/w.safetensors"), payload), dest, policy=FAST)
    assert len(server.requests_for("/w.safetensors")) == 3 and dest.read_bytes() == payload


@pytest.mark.parametrize(
    "status, gated, cause",
    [(404, False, "not found"), (401, False, "pass --token or set HF_TOKEN"), (403, True, r"gated.*\(--token or HF_TOKEN\)")],
)
def test_4xx_is_not_retried_and_says_why(server, payload, tmp_path, status, gated, cause):
    server.routes["/w.safetensors"] = Route(status=status)
    dest = tmp_path / "w.safetensors"
    with pytest.raises(DownloadError, match=cause) as info:
        fetch_file(wf_for(server.url("/w.safetensors"), payload), dest, gated=gated, label="m", policy=FAST)
    assert server.url("/w.safetensors") in str(info.value) and f"HTTP {status}" in str(info.value)
    assert len(server.requests_for("/w.safetensors")) == 1
    assert leftovers(tmp_path) == []


# --- offline, tokens, mirrors -------------------------------------------------------------------


@pytest.mark.parametrize("switch", ["VAECLI_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_switch_fails_at_once_without_a_connection(server, payload, tmp_path, monkeypatch, switch):
    server.routes["/w.safetensors"] = Route(body=payload)
    monkeypatch.setenv(switch, "1")
    t0 = time.monotonic()
    with pytest.raises(OfflineError, match="offline mode is on"):
        fetch_file(wf_for(server.url("/w.safetensors"), payload), tmp_path / "w.safetensors", policy=FAST)
    assert time.monotonic() - t0 < 1 and server.seen == []


def test_token_goes_only_to_its_host_and_the_mirror_rewrite_applies(server, payload, tmp_path, monkeypatch):
    """huggingface.co URLs go to the mirror (127.0.0.1) with the token; the same token never
    reaches another host (localhost), neither directly nor through a redirect."""
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.port}")
    with TestServer("localhost") as other:
        other.routes["/w.safetensors"] = Route(body=payload)
        server.routes["/org/repo/resolve/main/w.safetensors"] = Route(body=payload)
        server.routes["/org/repo/resolve/main/moved.safetensors"] = Route(redirect=other.url("/w.safetensors"))
        hub = WeightFile(filename="w.safetensors", urls=("https://huggingface.co/org/repo/resolve/main/w.safetensors",))
        moved = WeightFile(filename="w.safetensors", urls=("https://huggingface.co/org/repo/resolve/main/moved.safetensors",))
        direct = WeightFile(filename="w.safetensors", urls=(other.url("/w.safetensors"),))
        for i, wf in enumerate((hub, moved, direct)):
            fetch_file(wf, tmp_path / str(i) / "w.safetensors", token=TOKEN, policy=FAST)
        hub_auth = [s.headers.get("Authorization") for s in server.seen]
        other_auth = [s.headers.get("Authorization") for s in other.seen]
    assert hub_auth == [f"Bearer {TOKEN}"] * 2  # the file, and the redirect answer
    assert other_auth == [None, None]  # after the redirect, and directly


# --- the CLI, as a real subprocess --------------------------------------------------------------


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (same parsing and error mapping as the executable, no startup cost)."""
    with pytest.raises(SystemExit) as info:
        main(["fetch-weights", *args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_cli_fetches_prints_the_path_and_then_is_a_no_op(server, payload, sha, tmp_path, capsys):
    server.routes["/w.safetensors"] = Route(body=payload)
    env = {"VAECLI_CACHE": str(tmp_path / "cache")}
    args = ("--url", server.url("/w.safetensors"), "--sha256", sha, "--name", "mine", "--print-path")
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    path = Path(first.stdout.strip())
    assert path == tmp_path / "cache" / "mine" / "w.safetensors" and path.read_bytes() == payload
    rc, out, _ = run_main(capsys, *args, "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["failed"] == 0 and doc["models"][0]["files"][0] == {"path": str(path), "status": "cached", "sha256": None}
    assert len(server.requests_for("/w.safetensors")) == 1
    path.write_bytes(payload[::-1])  # altered, same size
    rc, _, err = run_main(capsys, *args, "--verify")
    assert rc == 1 and "sha256 mismatch" in err


def test_cli_exit_codes_unknown_name_and_partial_failure(server, payload, sha, tmp_path, capsys, monkeypatch):
    server.routes["/w.safetensors"] = Route(body=payload)
    server.routes[SD35_PATH] = Route(status=401)
    monkeypatch.setenv("VAECLI_ENDPOINT", f"http://127.0.0.1:{server.port}")
    rc, _, err = run_main(capsys, "no-such-model")
    assert rc == 2 and "unknown model 'no-such-model'" in err and server.seen == []
    rc, _, err = run_main(capsys, "--sha256", sha)
    assert rc == 2 and "give --url too" in err
    rc, _, err = run_main(capsys, "sd3.5-vae", "--url", server.url("/w.safetensors"), "--sha256", sha, "--name", "mine")
    assert rc == 1
    assert "sd3.5-vae is gated" in err and "(--token or HF_TOKEN)" in err and "Traceback" not in err
    assert (tmp_path / "cache" / "mine" / "w.safetensors").read_bytes() == payload
    assert leftovers(tmp_path / "cache" / "sd3.5-vae") == []


def test_cli_offline_switch_makes_no_connection(server, payload, sha, capsys, monkeypatch, tmp_path):
    server.routes["/w.safetensors"] = Route(body=payload)
    monkeypatch.setenv("VAECLI_OFFLINE", "1")
    rc, _, err = run_main(capsys, "--url", server.url("/w.safetensors"), "--sha256", sha, "--name", "mine")
    assert rc == 1 and "offline mode is on" in err and server.seen == []
    assert not (tmp_path / "cache").exists()  # no empty folder left behind


def test_cli_never_shows_the_token(server, tmp_path):
    """The token reaches the hub but no output, not even in errors about URLs that contain it."""
    server.routes[SD35_PATH] = Route(status=403)
    env = {"VAECLI_CACHE": str(tmp_path / "cache"), "VAECLI_ENDPOINT": f"http://127.0.0.1:{server.port}", "HF_TOKEN": TOKEN}
    gated = run_cli("sd3.5-vae", env=env)
    leaky_url = server.url(f"/missing.bin?sig={TOKEN}")
    custom = run_cli("--url", leaky_url, "--name", "x", "--token", TOKEN, "--json", env=env)
    assert server.requests_for(SD35_PATH)[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert server.requests_for("/missing.bin")[0].headers["Authorization"] == f"Bearer {TOKEN}"  # explicit --token, --url host
    assert gated.returncode == 1 and "token was refused" in gated.stderr
    assert custom.returncode == 1 and "HTTP 404" in custom.stdout
    for out in (gated.stdout, gated.stderr, custom.stdout, custom.stderr):
        assert TOKEN not in out


def test_cli_token_saved_with_a_carriage_return_is_stripped_and_never_shown(server, payload, sha, tmp_path):
    """A token file saved on Windows ends in \\r\\n; requests refuses such a header and quotes it, token included."""
    server.routes["/w.safetensors"] = Route(body=payload)
    server.routes[SD35_PATH] = Route(status=403)
    env = {"VAECLI_CACHE": str(tmp_path / "cache"), "VAECLI_ENDPOINT": f"http://127.0.0.1:{server.port}"}
    custom = run_cli("--url", server.url("/w.safetensors"), "--sha256", sha, "--name", "mine", "--token", TOKEN + "\r\n", env=env)
    gated = run_cli("sd3.5-vae", env={**env, "HF_TOKEN": TOKEN + "\r"})
    assert custom.returncode == 0, custom.stderr
    assert (tmp_path / "cache" / "mine" / "w.safetensors").read_bytes() == payload
    assert gated.returncode == 1 and "token was refused" in gated.stderr
    sent = [s.headers.get("Authorization") for s in server.seen]
    assert sent == [f"Bearer {TOKEN}"] * 2  # stripped, to the --url host and to the hub mirror
    for out in (custom.stdout, custom.stderr, gated.stdout, gated.stderr):
        assert TOKEN not in out and TOKEN[:12] not in out


def test_cli_token_with_whitespace_inside_is_refused_without_showing_it(server, tmp_path):
    server.routes[SD35_PATH] = Route(status=403)
    env = {"VAECLI_CACHE": str(tmp_path / "cache"), "VAECLI_ENDPOINT": f"http://127.0.0.1:{server.port}"}
    first, second = TOKEN[:12], TOKEN[12:]
    p = run_cli("sd3.5-vae", env={**env, "HF_TOKEN": f"{first}\r{second}"})
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "whitespace or control characters" in p.stderr
    assert first not in p.stderr + p.stdout and second not in p.stderr + p.stdout
    assert server.seen == [] and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("debug", ["0", "1"])
def test_top_level_handler_redacts_any_exception(monkeypatch, capsys, debug):
    """Whatever raises, with whatever type: --token's value, HF_TOKEN's, and anything shaped like a token go."""
    import typer

    from vaecli.cli import app as cli_app

    env_token = "hf_" + "E" * 30
    other = "hf_" + "Q1w2E3r4T5y6U7i8O9p0" * 2  # given to no one: recognised by its shape
    tiny = typer.Typer()

    @tiny.command()
    def boom(token: str = typer.Option(None, "--token")) -> None:
        raise ValueError(f"header 'Authorization: Bearer abc.def\r' for {token} / {env_token} / {other}")

    @tiny.command()
    def other_command() -> None:  # a second command, so that Typer keeps the command names
        pass

    monkeypatch.setattr(cli_app, "app", tiny)
    monkeypatch.setenv("HF_TOKEN", env_token)
    monkeypatch.setenv("VAECLI_DEBUG", debug)
    for args in (["boom", "--token", "s3cr3t-value"], ["boom", "--token=s3cr3t-value"]):
        with pytest.raises(SystemExit) as info:
            cli_app.main(args)
        err = capsys.readouterr().err
        assert info.value.code == 2 and "ValueError" in err and ("Traceback" in err) == (debug == "1")
        for secret in ("s3cr3t-value", env_token, other, "abc.def"):
            assert secret not in err
        assert "Bearer ***" in err


def test_unresolvable_host_fails_at_once_and_leaves_no_folder(tmp_path):
    """Offline (or a typo): one line saying the host cannot be reached, no retries, nothing in the cache.

    VAECLI_RETRY_DELAY=30 makes any retry visible: the first would wait 30 s, past the timeout."""
    cache = tmp_path / "cache"
    (cache / "other-model").mkdir(parents=True)
    env = {"VAECLI_CACHE": str(cache), "VAECLI_RETRY_DELAY": "30", "VAECLI_ENDPOINT": "http://hub.vaecli-test.invalid"}
    for args in (["sd-vae-ft-mse"], ["--url", "http://weights.vaecli-test.invalid/w.safetensors", "--name", "mine"]):
        p = run_cli(*args, env=env, timeout=25)
        host = "hub.vaecli-test.invalid" if len(args) == 1 else "weights.vaecli-test.invalid"
        assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
        assert f"cannot reach {host}: the host name does not resolve" in p.stderr and "attempts" not in p.stderr
        assert leftovers(cache) == ["other-model"]


def test_unresolvable_host_keeps_a_partial_for_a_later_resume(payload, tmp_path):
    dest = tmp_path / "w.safetensors"
    partial = tmp_path / "w.safetensors.partial"
    partial.write_bytes(payload[:1000])  # an earlier run that lost the network midway
    wf = wf_for("http://weights.vaecli-test.invalid/w.safetensors", payload)
    with pytest.raises(DownloadError, match="does not resolve"):
        fetch_file(wf, dest, policy=RetryPolicy(retries=3, base_delay=30))
    assert partial.read_bytes() == payload[:1000] and leftovers(tmp_path) == ["w.safetensors.partial"]


def test_verify_of_a_model_not_cached_downloads_nothing(server, payload, tmp_path, monkeypatch, capsys):
    server.routes["/stabilityai/sd-vae-ft-mse-original/resolve/main/vae-ft-mse-840000-ema-pruned.safetensors"] = Route(body=payload)
    monkeypatch.setenv("VAECLI_ENDPOINT", f"http://127.0.0.1:{server.port}")
    rc, _, err = run_main(capsys, "sd-vae-ft-mse", "--verify")
    assert rc == 1 and "not downloaded, so there is nothing to verify" in err
    assert server.seen == [] and not (tmp_path / "cache").exists()


def _blocked_on_flock(pid: int) -> bool:
    """Whether `pid` waits for an flock: /proc/locks lists waiters as '->' lines."""
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:  # pragma: no cover - not Linux
        return False
    return any("->" in line and "FLOCK" in line and f" {pid} " in f" {line} " for line in lines)


def test_two_processes_download_once_and_both_succeed(server, payload, sha, tmp_path):
    """The first process holds the body until the second is seen waiting on the lock."""
    release = threading.Event()
    server.routes["/w.safetensors"] = Route(body=payload, hold=release)
    exe = shutil.which("vaecli") or str(Path(sys.executable).parent / "vaecli")
    env = {k: v for k, v in os.environ.items() if k not in _ENV_VARS}
    args = [exe, "fetch-weights", "--url", server.url("/w.safetensors"), "--sha256", sha, "--name", "m", "--cache-dir", str(tmp_path), "--json"]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not server.requests_for("/w.safetensors") and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    while not _blocked_on_flock(second.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _blocked_on_flock(second.pid), "the second process never waited on the lock"
    release.set()
    outs = [p.communicate(timeout=60) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    statuses = [json.loads(out)["models"][0]["files"][0]["status"] for out, _ in outs]
    assert statuses == ["downloaded", "verified"]  # the second found the file and hashed it
    assert len(server.requests_for("/w.safetensors")) == 1
    assert (tmp_path / "m" / "w.safetensors").read_bytes() == payload and leftovers(tmp_path / "m") == ["w.safetensors"]


# --- the seed's helpers and the registry --------------------------------------------------------


def test_seed_download_and_md5_hash(server, payload, tmp_path):
    server.routes["/f.bin"] = Route(body=payload)
    download.download(server.url("/f.bin"), tmp_path / "f.bin", chunk_size=1024)
    assert (tmp_path / "f.bin").read_bytes() == payload
    assert download.md5_hash(tmp_path / "f.bin") == hashlib.md5(payload).hexdigest()


def test_registry_entries_are_complete():
    for name in ("sd-vae-ft-mse", "sd-vae-ft-ema", "sdxl-vae", "sdxl-vae-fp16-fix", "flux-vae", "sd3.5-vae", "vgg_lpips", "vgg16"):
        entry = get_entry(name)
        (wf,) = entry.files
        assert wf.urls and wf.filename and (wf.sha256 or wf.md5), name
        assert len(wf.sha256 or wf.md5) in (64, 32)
        assert entry.license, name
    assert get_entry("sd3.5-vae").gated and get_entry("sd3.5-vae").config == "sd3-vae"
    assert get_entry("vgg_lpips").files[0].md5 == "d507d7349b931f0638a25a48a722f98a"
    assert get_entry("flux-vae").gated  # the repository asks for a login now
    (vgg16,) = get_entry("vgg16").files
    assert get_entry("vgg16").config is None and vgg16.sha256_confirmed and vgg16.size == 553433881

