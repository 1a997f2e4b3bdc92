"""Nothing a user owns is ever lost: the issue's overwrite and lost-input defects, each through the real CLI.

Each test reproduces one report as a user ran it (real folders, real files, the `vaecli` entry point)
and checks that the user's files are byte for byte as they were, that the refused input is named
on stderr, and what --overwrite does.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from tests.clitools import by_name, noise_image, run_json, run_main, snapshot
from vaecli.io.latents import read_latent


def _common(weights):
    return ("--weights", weights, "--device", "cpu")


def test_decode_into_the_photos_folder_never_replaces_the_photos(tmp_path, capsys, cli_weights, monkeypatch):
    """`vaecli encode photos/` (latents beside), then `vaecli decode photos/*.safetensors -o photos/`."""
    photos = tmp_path / "photos"
    for i in range(7):
        noise_image(photos / f"p{i}.png", 24, 16, i)
    assert run_main(capsys, "encode", photos, *_common(cli_weights), "--quiet")[0] == 0
    before = {k: v for k, v in snapshot(photos).items() if k.endswith(".png")}
    code, doc, err = run_json(capsys, "decode", *sorted(photos.glob("*.safetensors")), "-o", photos)
    assert code == 1 and [r["status"] for r in doc["results"]] == ["failed"] * 7
    assert "p0.png already exists and was not written by vaecli; pass --overwrite" in err
    assert {k: v for k, v in snapshot(photos).items() if k.endswith(".png")} == before
    # The same with one file, in the folder itself, as the issue ran it: the photo stays.
    monkeypatch.chdir(photos)
    code, out, err = run_main(capsys, "decode", "p3.safetensors", "-o", ".")
    assert code == 1 and "p3.png already exists" in err and "Traceback" not in err
    assert snapshot(photos)["p3.png"] == before["p3.png"]


def test_roundtrip_into_its_own_folder_replaces_no_input(tmp_path, capsys, cli_weights):
    """`vaecli roundtrip photos/ -o photos/` with x.jpg and x.png: x.png is an input, never an output."""
    photos = tmp_path / "photos"
    noise_image(photos / "x.jpg", 20, 20, 0)
    noise_image(photos / "x.png", 20, 20, 1)
    before = snapshot(photos)
    for extra in ((), ("--overwrite",)):
        code, doc, err = run_json(capsys, "roundtrip", photos, "-o", photos, *_common(cli_weights), "--no-lpips", *extra)
        assert code == 1 and [r["status"] for r in doc["results"]] == ["failed", "failed"]
        res = by_name(doc)
        assert f"would replace the input {photos / 'x.png'}" in res["x.jpg"]["error"]
        assert "would replace itself" in res["x.png"]["error"]
        assert snapshot(photos) == before


def test_an_unrelated_safetensors_file_is_not_taken_for_a_latent(tmp_path, capsys, cli_weights):
    """`vaecli encode folder/` with model.png and the user's own model.safetensors beside it."""
    folder = tmp_path / "folder"
    noise_image(folder / "model.png", 16, 16, 0)
    noise_image(folder / "other.png", 16, 16, 1)
    (folder / "model.safetensors").write_bytes((Path(cli_weights)).read_bytes())  # someone's weights file
    before = snapshot(folder)["model.safetensors"]
    code, doc, err = run_json(capsys, "encode", folder, *_common(cli_weights))
    res = by_name(doc)
    assert code == 1 and res["model.png"]["status"] == "failed" and res["other.png"]["status"] == "ok"
    assert "model.safetensors already exists and was not written by vaecli" in err
    assert snapshot(folder)["model.safetensors"] == before
    code, doc, _ = run_json(capsys, "encode", folder, *_common(cli_weights), "--overwrite")  # the user says so
    assert code == 0 and read_latent(folder / "model.safetensors").meta is not None


def test_decode_keeps_the_users_own_older_image(tmp_path, capsys, cli_weights):
    """`vaecli decode latents/ -o photos/` where photos/ holds the user's own a.png."""
    from vaecli.io.provenance import read_provenance

    noise_image(tmp_path / "src" / "a.png", 16, 24, 0)
    assert run_main(capsys, "encode", tmp_path / "src", "-o", tmp_path / "latents", *_common(cli_weights), "--quiet")[0] == 0
    mine = noise_image(tmp_path / "photos" / "a.png", 50, 50, 7)
    before = mine.read_bytes()
    code, doc, err = run_json(capsys, "decode", tmp_path / "latents", "-o", tmp_path / "photos")
    assert code == 1 and doc["results"][0]["status"] == "failed" and "--overwrite" in err
    assert mine.read_bytes() == before
    code, doc, _ = run_json(capsys, "decode", tmp_path / "latents", "-o", tmp_path / "photos", "--overwrite")
    assert code == 0 and Image.open(mine).size == (16, 24)
    assert read_provenance(mine)["source"]["path"] == str((tmp_path / "latents" / "a.safetensors").resolve())
    code, doc, _ = run_json(capsys, "decode", tmp_path / "latents", "-o", tmp_path / "photos")  # now it is ours: up to date
    assert code == 0 and doc["results"][0]["status"] == "skipped"


def test_a_latent_of_another_source_is_not_replaced(tmp_path, capsys, cli_weights):
    """`encode s/a.jpg -o lat/` then `encode s/a.png -o lat/`; and two folders with shared names into one -o."""
    s = tmp_path / "s"
    noise_image(s / "a.jpg", 16, 16, 0)
    noise_image(s / "a.png", 16, 16, 1)
    assert run_json(capsys, "encode", s / "a.jpg", "-o", tmp_path / "lat", *_common(cli_weights))[0] == 0
    before = snapshot(tmp_path / "lat")
    code, doc, err = run_json(capsys, "encode", s / "a.png", "-o", tmp_path / "lat", *_common(cli_weights))
    assert code == 1 and doc["summary"]["failed"] == 1 and f"made by vaecli from {(s / 'a.jpg').resolve()}" in err
    assert snapshot(tmp_path / "lat") == before

    noise_image(tmp_path / "one" / "x" / "0001.png", 16, 16, 2)
    noise_image(tmp_path / "two" / "x" / "0001.png", 16, 16, 3)
    noise_image(tmp_path / "two" / "x" / "0002.png", 16, 16, 4)
    code, doc, err = run_json(capsys, "encode", tmp_path / "one", tmp_path / "two", "-o", tmp_path / "lat2", *_common(cli_weights))
    status = {r["input"]: r["status"] for r in doc["results"]}
    assert code == 1 and list(status.values()) == ["failed", "failed", "ok"]  # both claimants fail, naming each other
    assert f"would also be written for {tmp_path / 'two' / 'x' / '0001.png'}" in err
    assert sorted(snapshot(tmp_path / "lat2")) == ["x/0002.safetensors"]
    # one folder at a time into the same -o: the second run refuses instead of replacing the first's latent
    assert run_json(capsys, "encode", tmp_path / "one", "-o", tmp_path / "lat3", *_common(cli_weights))[0] == 0
    code, doc, _ = run_json(capsys, "encode", tmp_path / "two", "-o", tmp_path / "lat3", *_common(cli_weights))
    assert code == 1 and [r["status"] for r in doc["results"]] == ["failed", "ok"]
    assert read_latent(tmp_path / "lat3" / "x" / "0001.safetensors").meta.source == str((tmp_path / "one" / "x" / "0001.png").resolve())


def test_sidecar_files_in_a_glob_claim_no_names(tmp_path, capsys, cli_weights):
    """`vaecli encode 'ds/*'` over images with .json and .caption sidecars: every image is encoded."""
    ds = tmp_path / "ds"
    for i in range(3):
        noise_image(ds / f"{i:04d}.png", 16, 16, i)
        (ds / f"{i:04d}.json").write_text('{"caption": "a photo"}')
        (ds / f"{i:04d}.caption").write_text("a photo")
    code, doc, err = run_json(capsys, "encode", str(ds / "*"), *_common(cli_weights))
    assert code == 0 and [r["status"] for r in doc["results"]] == ["ok"] * 3, err
    code, doc, err = run_json(capsys, "encode", ds / "0000.json", ds / "0001.png", *_common(cli_weights))  # named explicitly: fails alone
    assert code == 1 and [r["status"] for r in doc["results"]] == ["failed", "skipped"] and "0000.json: not a file this command reads" in err


def test_outputs_inside_an_input_folder_are_not_taken_for_inputs(tmp_path, capsys, cli_weights):
    photos = tmp_path / "photos"
    noise_image(photos / "a.png", 16, 16, 0)
    for _ in range(2):
        code, doc, _ = run_json(capsys, "roundtrip", photos, "-o", photos / "recon", *_common(cli_weights), "--no-lpips")
        assert code == 0 and [r["input"] for r in doc["results"]] == [str(photos / "a.png")]
    assert doc["results"][0]["status"] == "skipped"  # the second run: up to date, its metrics reported again
    assert sorted(snapshot(photos)) == ["a.png", "recon/a.png"]


def test_names_with_dots_keep_all_but_their_last_suffix(tmp_path, capsys, cli_weights):
    """`img.001.png`, `img.002.png` and `v1.0.png` through encode, decode and roundtrip: only the last suffix
    is replaced (before, both img.* mapped to img.safetensors and failed as a clash, v1.0.png became v1.*)."""
    src = tmp_path / "src"
    names = ["img.001", "img.002", "v1.0"]
    for i, stem in enumerate(names):
        noise_image(src / f"{stem}.png", 16, 24, i)
    code, doc, err = run_json(capsys, "encode", src, "-o", tmp_path / "enc", *_common(cli_weights))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == [f"{n}.safetensors" for n in names]
    code, doc, err = run_json(capsys, "decode", tmp_path / "enc", "-o", tmp_path / "dec")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "dec").iterdir()) == [f"{n}.png" for n in names]
    code, doc, err = run_json(capsys, "roundtrip", src, "-o", tmp_path / "rt", *_common(cli_weights), "--no-lpips", "--compare")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "rt").iterdir()) == sorted(f"{n}{s}" for n in names for s in (".png", ".compare.png"))


def test_report_never_replaces_a_file_vaecli_did_not_write(tmp_path, capsys, cli_weights):
    """`--report precious.json` over the user's own JSON replaced it (found by a fresh-eyes check): now a
    setup error before any work unless --overwrite; a report vaecli wrote is replaced by a rerun."""
    noise_image(tmp_path / "a.png", 16, 24, 0)
    mine = {"precious.json": '{"my": "caption data"}\n', "notes.csv": "name,caption\na,cat\n", "page.html": "<html>mine</html>\n"}
    for name, text in mine.items():
        (tmp_path / name).write_text(text)
        code, out, err = run_main(capsys, "roundtrip", tmp_path / "a.png", *_common(cli_weights), "--no-lpips", "--report", tmp_path / name)
        assert code == 2 and "exists and is not a report vaecli wrote" in err and err.count("Error") == 1, err
        assert (tmp_path / name).read_text() == text
    for name in ("ours.json", "ours.csv"):  # written by vaecli, then rerun: replaced
        for _ in range(2):
            code, out, err = run_main(capsys, "roundtrip", tmp_path / "a.png", *_common(cli_weights), "--no-lpips", "--report", tmp_path / name)
            assert code == 0, err
    code, out, err = run_main(capsys, "roundtrip", tmp_path / "a.png", *_common(cli_weights), "--no-lpips", "--overwrite",
                              "--report", tmp_path / "precious.json")
    assert code == 0, err
    assert '"summary"' in (tmp_path / "precious.json").read_text()
