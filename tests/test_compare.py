"""roundtrip --fid against pytorch-fid through the CLI, the HTML report in a real headless browser, and
`vaecli compare` over several models (the embedded default and a model given by its weights file)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from html import escape as html_escape
from pathlib import Path
from unittest import mock

import pytest
import torch
from PIL import Image

from tests.browser import check_page
from tests.clitools import run_json, run_main, vaecli
from tests.fid_helpers import photos, random_inception
from vaecli.quality.inception import FEATURE_DIMS, WEIGHTS_NAME
from vaecli.weights import registry
from vaecli.weights.checkpoints import save_weights

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture(scope="module")
def network():
    return random_inception()


@pytest.fixture(scope="module")
def inception_cache(network, tmp_path_factory):
    """A vaecli cache holding the random Inception as the pinned pytorch-fid file, the pin made its hash."""
    cache = tmp_path_factory.mktemp("vaecli-cache")
    entry = registry.get_entry(WEIGHTS_NAME)
    path = registry.cached_file(WEIGHTS_NAME, entry.files[0], cache)
    path.parent.mkdir(parents=True)
    torch.save(network.state_dict(), path)
    pinned = dataclasses.replace(entry, files=(dataclasses.replace(entry.files[0], sha256=hashlib.sha256(path.read_bytes()).hexdigest()),))
    original = registry.get_entry
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "get_entry", lambda name: pinned if name == WEIGHTS_NAME else original(name))
        mp.setenv("VAECLI_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """Four crops of real photographs as PNG files, at odd sizes, one over 1024 px."""
    folder = tmp_path_factory.mktemp("photos")
    chosen = photos()
    for name, (h, w) in {"retina": (1031, 1027), "coffee": (301, 397), "chelsea": (257, 411), "china": (333, 299)}.items():
        img = chosen[name]
        top, left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        Image.fromarray(img[top : top + h, left : left + w, :3]).save(folder / f"{name}.png")
    return folder


def _pytorch_fid(folders: list[Path], network) -> float:
    """pytorch-fid's whole pipeline over two folders, our random weights given to its own loader."""
    inception = pytest.importorskip("pytorch_fid.inception", reason="pytorch-fid (a test dependency) is not installed")
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    with mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: network.state_dict()):
        return float(fid_score.calculate_fid_given_paths([str(f) for f in folders], batch_size=1, device="cpu", dims=FEATURE_DIMS, num_workers=0))


def test_roundtrip_fid_equals_pytorch_fid_over_the_input_and_output_folders(capsys, inception_cache, network, photo_folder, cli_weights, tmp_path):
    out, report = tmp_path / "out", tmp_path / "report.json"
    code, text, err = run_main(capsys, "roundtrip", photo_folder, "-o", out, "--weights", cli_weights, "--fid", "--no-lpips", "--report", report)
    assert code == 0, err
    summary = json.loads(report.read_text())["summary"]
    assert summary["rfid_images"] == 4 and summary["rfid_note"].startswith("rFID over 4 images; biased")
    assert f"rFID {summary['rfid']:.4f} (rFID over 4 images; biased" in text  # the table says it too
    theirs = _pytorch_fid([photo_folder, out], network)
    assert 1.0 < theirs and abs(summary["rfid"] - theirs) < 1e-3, (summary["rfid"], theirs)


def test_roundtrip_fid_without_the_weights_names_the_command_and_writes_nothing(tmp_path, cli_weights):
    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    Image.fromarray(photos()["coffee"][:64, :80]).save(img)
    done = vaecli("roundtrip", img.parent, "-o", tmp_path / "out", "--weights", cli_weights, "--fid", env={"VAECLI_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "Error: --fid: the FID Inception weights are not cached; run: vaecli fetch-weights pt_inception"
    ]
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()  # nothing written, nothing downloaded


def _assert_self_contained(html: str) -> None:
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", html, re.I) and "<link" not in html and "@import" not in html
    assert not re.search(r"<script[^>]+src", html, re.I) and "url(" not in html


def test_roundtrip_html_report_opens_in_a_browser_worst_first_within_its_size(capsys, photo_folder, cli_weights, tmp_path):
    out, report = tmp_path / "out", tmp_path / "report.html"
    code, doc, err = run_json(capsys, "roundtrip", photo_folder, "-o", out, "--weights", cli_weights, "--report", report, "--no-lpips")
    assert code == 0, err
    html = report.read_text(encoding="utf-8")
    _assert_self_contained(html)
    seen = check_page(report)
    assert seen["table"] and seen["rows"] == 1 and seen["fetched"] == [] and seen["broken"] == []
    assert seen["images"] == 4 * (2 + 3) and seen["chart_points"] == 4  # each: input and its crop, reconstruction, heatmap, crop
    worst_first = sorted(doc["results"], key=lambda r: r["psnr"])
    assert [c.split(". ", 1)[1] for c in seen["cards"]] == [r["input"] for r in worst_first]
    for r in doc["results"]:  # the full-size files are linked, not embedded, relative to the report
        assert f'href="out/{Path(r["output"]).name}"' in html
    assert len(html.encode()) / 4 < 100_000  # bytes per image, one model, a 1031x1027 photograph among them
    # A rerun measures every input anew (the report needs every image's pixels): none is skipped as up to date.
    code, doc, err = run_json(capsys, "roundtrip", photo_folder, "-o", out, "--weights", cli_weights, "--report", report, "--no-lpips")
    assert code == 0 and doc["summary"]["ok"] == 4 and doc["summary"]["skipped"] == 0, err


def test_a_report_that_is_neither_html_json_nor_csv_is_refused_before_any_work(capsys, photo_folder, cli_weights, tmp_path):
    code, out, err = run_main(capsys, "roundtrip", photo_folder, "--weights", cli_weights, "--report", tmp_path / "r.txt")
    assert code == 2 and "use a .csv, .json or .html file" in err


@pytest.fixture(scope="module")
def second_model(tmp_path_factory) -> Path:
    """A small model given by its weights file (the CLI tests' f8 architecture, other random weights)."""
    from tests.conftest import CLI_CONFIG
    from vaecli.model import AutoencoderKL

    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("second") / "tiny-f8.safetensors"
    save_weights(AutoencoderKL(CLI_CONFIG).eval(), path)
    return path


def _table_cells(html: str) -> list[list[str]]:
    body = re.search(r'<table id="summary">.*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]


def test_compare_samples_default_and_a_weights_file_one_run(capsys, second_model, tmp_path):
    """`vaecli compare samples/` over the embedded default and a model given by its weights file:
    both rows, the best marked, the JSON and the HTML report of one run holding the same numbers."""
    from vaecli.batch.compare import COLUMNS

    report, out = tmp_path / "compare.html", tmp_path / "recon"
    code, doc, err = run_json(capsys, "compare", SAMPLES, "--model", "vaecli-default", "--model", second_model, "--resize", "256",
                              "--no-lpips", "-o", out, "--report", report)
    assert code == 0, err
    rows = {r["model"]: r for r in doc["models"]}
    assert list(rows) == ["vaecli-default", "tiny-f8"]
    assert (rows["vaecli-default"]["channels"], rows["vaecli-default"]["factor"]) == (8, 4)
    assert (rows["tiny-f8"]["channels"], rows["tiny-f8"]["factor"]) == (4, 8)
    for label, row in rows.items():
        results = doc["results"][label]
        assert [Path(r["input"]).name for r in results] == ["astronaut.jpg", "immunohistochemistry.jpg", "retina.jpg"]
        assert all(r["status"] == "ok" and Path(r["output"]).parent == out / label for r in results)
        assert row["mean_psnr"] == pytest.approx(sum(r["psnr"] for r in results) / 3, rel=1e-12)
        assert row["images_per_second"] > 0 and row["rfid"] is None
    # the trained default beats random weights; each mark goes to the row holding the column's best value
    assert doc["best"]["mean_psnr"] == doc["best"]["mean_ssim"] == "vaecli-default"
    fastest = max(rows.values(), key=lambda r: r["images_per_second"])["model"]
    assert doc["best"]["images_per_second"] == fastest
    html = report.read_text(encoding="utf-8")
    for cells, row in zip(_table_cells(html), doc["models"]):
        for cell, c in zip(cells, COLUMNS):
            starred = doc["best"].get(c.key) == row["model"]
            assert cell == c.format(row.get(c.key)) + (" ★" if starred else ""), (c.key, cell)
    seen = check_page(report)
    assert seen["broken"] == [] and seen["fetched"] == [] and seen["rows"] == 2 and seen["chart_points"] == 6
    assert seen["images"] == 3 * (2 + 2 * 3)


def test_compare_table_marks_the_best_and_a_model_that_cannot_load_is_named_exit_2(capsys, cli_weights, second_model, tmp_path):
    img = tmp_path / "in" / "coffee.png"
    img.parent.mkdir()
    Image.fromarray(photos()["coffee"][:96, :136]).save(img)
    code, doc, err = run_json(capsys, "compare", img, "--model", cli_weights, "--model", second_model, "--no-lpips")
    assert code == 0, err
    code, text, err = run_main(capsys, "compare", img, "--model", cli_weights, "--model", second_model, "--model", tmp_path / "gone.safetensors", "--no-lpips")
    assert code == 2 and "Error: --model " in err and "gone.safetensors" in err
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.strip().startswith("tiny-f8")}
    assert set(lines) == {"tiny-f8", "tiny-f8-2"}  # the same file stem twice: labels kept apart
    best_psnr = doc["best"]["mean_psnr"]
    for label, line in lines.items():
        row = next(r for r in doc["models"] if r["model"] == label)
        assert f"{row['mean_psnr']:.2f}" in line  # the same weights and input: the same numbers as the JSON run
        assert (f"{row['mean_psnr']:.2f} *" in line) == (label == best_psnr)
    assert math.isfinite(doc["models"][0]["mean_psnr"]) and json.dumps(doc)


def test_report_views_and_html_for_perfect_odd_and_hostile_inputs(tmp_path):
    """Library level, no model: a perfect reconstruction (PSNR inf) goes last and charts nothing off
    scale, a tiny image has no SSIM, a file name full of markup stays text, heatmaps use a fixed scale."""
    from types import SimpleNamespace

    from vaecli.batch.compare import COLUMNS
    from vaecli.quality.gallery import HEATMAP_FULL_SCALE, Gallery, detail_box, heatmap
    from vaecli.quality.report_html import render_report

    photo = torch.from_numpy(photos()["chelsea"][:150, :230].copy()).permute(2, 0, 1).float() / 255  # (3, 150, 230)
    assert heatmap(photo, photo, (23, 15)).max() == 0  # no error: black
    assert (heatmap(photo, (photo + 2 * HEATMAP_FULL_SCALE).clamp(max=2), (23, 15)) == [252, 255, 164]).all()  # past full scale: the top colour
    flat = torch.full((3, 300, 300), 0.5)
    flat[:, 200:230, 40:70] = torch.rand(3, 30, 30, generator=torch.Generator().manual_seed(0))
    top, left, size = detail_box(flat)
    assert top <= 200 and top + size >= 230 and left <= 40 and left + size >= 70  # the crop holds the only detail

    gallery = Gallery()
    observe = gallery.observer("m")
    hostile = '<img src=x onerror="alert(1)">.png'
    cases = [("perfect.png", photo, photo, {"psnr": math.inf, "ssim": 1.0}),
             (hostile, photo, photo.flip(-1), {"psnr": 8.5, "ssim": 0.1}),
             ("tiny.png", photo[:, :7, :9], photo[:, :7, :9] * 0.9, {"psnr": 30.0, "ssim": math.nan})]
    for name, x, y, m in cases:
        observe(SimpleNamespace(input=Path(name), output=None), x, y, m)
    rows = [{"model": "m", "channels": 4, "factor": 8, "mean_psnr": math.inf}]
    html = render_report("t", rows, COLUMNS, {}, gallery, tmp_path / "r.html")
    assert hostile not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.png" in html
    _assert_self_contained(html)
    titles = re.findall(r"<h3>(.*?)</h3>", html)
    assert [t.split(". ", 1)[1] for t in titles] == [html_escape(hostile), "tiny.png", "perfect.png"]  # worst first, perfect last
    assert html.count("<circle") == 2  # inf is not charted
    (tmp_path / "r.html").write_text(html, encoding="utf-8")
    seen = check_page(tmp_path / "r.html")
    assert seen["broken"] == [] and seen["images"] == 3 * 5 and seen["fetched"] == []
