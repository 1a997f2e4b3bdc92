"""`vaecli fetch-weights`: download registry (or custom) weights into the cache, verified.

The only command that touches the network; every other command fails with the exact fetch
command when weights are missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import EXIT_OK, EXIT_SOME_FAILED, DownloadError, VaecliError
from ..weights import registry
from ..weights.repos import RepoRef
from .options import json_option


def _entries(names: list[str], all_: bool, url: str | None, sha256: str | None, name: str | None) -> list[registry.Entry | RepoRef]:
    """Resolve every name (a registry name or ORG/REPO[/SUBFOLDER]) before anything is downloaded, so a typo costs nothing."""
    if sha256 is not None and url is None:
        raise VaecliError("--sha256 pins the file of --url; give --url too")
    if url is not None and not name:
        raise VaecliError("--url needs --name NAME (the cache folder the file goes into)")
    if not names and not all_ and url is None:
        raise VaecliError(
            f"name the weights to fetch (known: {', '.join(registry.load_registry())}, or a Hugging Face repository ORG/REPO[/SUBFOLDER]), or use --all or --url"
        )

    def resolve(n: str) -> registry.Entry | RepoRef:
        ref = RepoRef.parse(n) if "/" in n else None
        return ref if ref is not None else registry.get_entry(n)

    entries = list(registry.load_registry().values()) if all_ else [resolve(n) for n in names]
    if url is not None:
        entries.append(registry.custom_entry(name, url, sha256))
    return entries


def fetch_weights(
    names: Annotated[
        Optional[list[str]],
        typer.Argument(help="Registry names (see `vaecli models`), or Hugging Face repositories ORG/REPO or ORG/REPO/SUBFOLDER holding a diffusers VAE.", show_default=False),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Fetch every registry entry.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Download again even when cached.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Hash cached files against their pinned or recorded sha256; downloads nothing.")] = False,
    print_path: Annotated[bool, typer.Option("--print-path", help="Print only the local path of each file.")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache folder (default: VAECLI_CACHE, $XDG_CACHE_HOME/vaecli, ~/.cache/vaecli).")] = None,
    url: Annotated[Optional[str], typer.Option("--url", help="Fetch a file from this URL instead (needs --name).")] = None,
    sha256: Annotated[Optional[str], typer.Option("--sha256", help="Pin the --url file; without it the first download records its sha256.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Cache folder name for --url.")] = None,
    token: Annotated[Optional[str], typer.Option("--token", help="Access token for gated models (default: HF_TOKEN). Sent only to huggingface.co, its mirror, and the --url host.", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or status lines.")] = False,
    json_: json_option("{models: [{name, files: [{path, status, sha256}], error}], failed}") = False,
) -> int:
    """Download pretrained weights, verified by sha256 (md5 for the LPIPS file).

    A file already in the Hugging Face cache (HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub) is checked and used in place: nothing is downloaded, nothing is copied.

    Exit codes: 0 all fetched; 1 some downloads failed (the others were done); 2 usage error or unknown name.
    Offline switch: VAECLI_OFFLINE=1 or HF_HUB_OFFLINE=1. Mirror: VAECLI_ENDPOINT or HF_ENDPOINT.

    Examples:  vaecli fetch-weights sd-vae-ft-mse    vaecli fetch-weights stabilityai/sd-vae-ft-mse
    vaecli fetch-weights black-forest-labs/FLUX.1-dev/vae --token $HF_TOKEN    vaecli fetch-weights vgg_lpips vgg16 --print-path
    """
    from ..weights import (
        download,  # requests costs ~0.1 s of start-up: only this command pays it
        hub,
    )

    entries = _entries(names or [], all_, url, sha256, name)
    explicit_token = token
    token = hub.resolve_token(token)  # stripped; whitespace inside is refused before any download
    hosts = set(hub.hub_token_hosts())
    report, failed = [], 0
    for entry in entries:
        label = str(entry) if isinstance(entry, RepoRef) else entry.name
        # An explicit --token with --url is meant for that URL's host; HF_TOKEN never leaves the hub.
        custom = url is not None and label == name
        extra = {hub.url_host(url)} if custom and explicit_token else set()
        item: dict = {"name": label, "files": []}
        how = dict(root=cache_dir, token=token, token_hosts=hosts | extra, force=force, verify=verify, quiet=quiet or json_)
        try:
            fetch = download.fetch_repo if isinstance(entry, RepoRef) else download.fetch_entry
            results = fetch(entry, **how)
            item["files"] = [{"path": str(r.path), "status": r.status, "sha256": r.sha256} for r in results]
            for note in dict.fromkeys(r.note for r in results if r.note):
                print(f"Warning: {label}: {note}", file=sys.stderr)
        except DownloadError as e:
            failed += 1
            item["error"] = str(e)
            if not json_:
                print(f"Error: {label}: {e}", file=sys.stderr)
        report.append(item)
        if not json_ and "error" not in item:
            for f in item["files"]:
                if print_path:
                    print(f["path"])
                elif not quiet:
                    print(f"{label}: {f['status']} {f['path']}")
    if json_:
        print(json.dumps({"models": report, "failed": failed}, indent=2))
    return EXIT_SOME_FAILED if failed else EXIT_OK
