"""The HTML report of a roundtrip or a comparison: one self-contained file (no network, fonts or outside scripts).

What it holds: the summary table (best per column marked), an inline SVG chart of every image's
PSNR per model, then each image, worst first: the input, each model's reconstruction and error
heatmap, a full-resolution crop of each enlarged, and a toggle that shows the input in place of a
reconstruction (click one, or the switch at the top for all). Images are embedded as data: URIs
of the small views of vaecli.quality.gallery; the full-size reconstructions written with -o are
linked (relative to the report), never embedded.
"""

from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .gallery import HEATMAP_FULL_SCALE, Gallery, GalleryEntry, thumbnail_size

GENERATOR_TAG = '<meta name="generator" content="vaecli">'  # how a rerun knows the file is a report vaecli wrote
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


@dataclass(frozen=True)
class Column:
    """One column of the summary table: the row key, its header, decimals, and which way is better (None: not ranked)."""

    key: str
    header: str
    digits: int = 2
    higher_is_better: bool | None = None

    def format(self, value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if isinstance(value, float):
            return "inf" if math.isinf(value) else f"{value:.{self.digits}f}"
        return str(value)


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _table(rows: list[dict], columns: list[Column], best: dict[str, str]) -> str:
    head = "".join(f"<th>{_esc(c.header)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            mark = c.key in best and best[c.key] == row["model"]
            cells.append(f'<td class="{"best" if mark else ""}">{_esc(c.format(row.get(c.key)))}{" ★" if mark else ""}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="summary"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def psnr_chart(series: dict[str, list[float | None]], names: list[str], width: int = 900, height: int = 260) -> str:
    """Inline SVG: one line of per-image PSNR per model over the images in `names`' order."""
    finite = [v for vals in series.values() for v in vals if v is not None and math.isfinite(v)]
    if not names or not finite:
        return '<p class="note">No per-image PSNR to chart.</p>'
    lo, hi = math.floor(min(finite)) - 1, math.ceil(max(finite)) + 1
    left, right, top, bottom = 48, 12, 12, 28
    pw, ph = width - left - right, height - top - bottom
    n = len(names)

    def px(i: int) -> float:
        return left + (pw * (i + 0.5) / n)

    def py(v: float) -> float:
        return top + ph * (hi - min(max(v, lo), hi)) / (hi - lo)

    parts = [f'<svg id="psnr-chart" viewBox="0 0 {width} {height}" role="img" aria-label="PSNR per image">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#bbb"/>']
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{py(v) + 4:.1f}" text-anchor="end" font-size="11">{v:.1f}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" font-size="11">images, worst first ({n}); PSNR in dB</text>')
    for m, (label, values) in enumerate(series.items()):
        colour = _PALETTE[m % len(_PALETTE)]
        points = [(px(i), py(v), v) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
        if len(points) > 1:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)}"/>')
        for (x, y, v), i in zip(points, (i for i, v in enumerate(values) if v is not None and math.isfinite(v))):
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"><title>{_esc(names[i])}: {_esc(label)} {v:.2f} dB</title></circle>')
        parts.append(f'<text x="{left + 8}" y="{top + 16 + 14 * m}" font-size="12" fill="{colour}">{_esc(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _link(path: str | None, report_dir: Path, text: str) -> str:
    if path is None:
        return ""
    rel = os.path.relpath(Path(path).resolve(), report_dir.resolve()).replace(os.sep, "/")
    return f' <a href="{_esc(rel)}">{_esc(text)}</a>'


def _card(name: str, entry: GalleryEntry, labels: list[str], report_dir: Path, index: int) -> str:
    inp = entry.input
    top, left, size = inp.box
    # The crop's place on the thumbnail, in percent of its size.
    mark = (f'<span class="box" style="left:{100 * left / inp.width:.2f}%;top:{100 * top / inp.height:.2f}%;'
            f'width:{100 * size / inp.width:.2f}%;height:{100 * size / inp.height:.2f}%"></span>')
    thumbs = [f'<figure><div class="pic">{mark}<img class="input-thumb" src="{_data_uri(inp.thumb)}" alt="input"></div>'
              f'<figcaption>input {inp.width}x{inp.height}</figcaption></figure>']
    under_input = f'<figure class="blank" style="width:{thumbnail_size(inp.width, inp.height)[0]}px"></figure>'  # heatmaps under their reconstructions
    heats, crops = [under_input], [f'<figure><img class="crop input-crop" src="{_data_uri(inp.crop)}" alt="input crop"><figcaption>input, crop</figcaption></figure>']
    for label in labels:
        r = entry.recons.get(label)
        if r is None:
            thumbs.append(f"<figure><figcaption>{_esc(label)}: failed</figcaption></figure>")
            heats.append('<figure class="blank"></figure>')
            crops.append('<figure class="blank"></figure>')
            continue
        psnr = Column("psnr", "PSNR").format(r.metrics.get("psnr"))
        ssim = Column("ssim", "SSIM", 4).format(r.metrics.get("ssim"))
        caption = f"{_esc(label)}: {psnr} dB, SSIM {ssim}" + _link(r.output, report_dir, "full size")
        thumbs.append(f'<figure class="toggle" data-input=".input-thumb" title="click: show the input here">'
                      f'<img src="{_data_uri(r.thumb)}" alt="{_esc(label)}"><figcaption>{caption}</figcaption></figure>')
        heats.append(f'<figure><img src="{_data_uri(r.heat)}" alt="{_esc(label)} error"><figcaption>{_esc(label)}: error</figcaption></figure>')
        crops.append(f'<figure class="toggle" data-input=".input-crop" title="click: show the input here">'
                     f'<img class="crop" src="{_data_uri(r.crop)}" alt="{_esc(label)} crop"><figcaption>{_esc(label)}, crop</figcaption></figure>')
    rows = "".join(f'<div class="row">{"".join(r)}</div>' for r in (thumbs, heats, crops))
    return f'<section class="card" id="img{index}"><h3>{index + 1}. {_esc(name)}</h3>{rows}</section>'


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px}h3{font-size:15px;margin:0 0 6px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}td.best{background:#e6f4e6;font-weight:600}
.note{color:#555;max-width:900px}
#psnr-chart{width:100%;max-width:900px;height:auto;display:block}
.card{border-top:1px solid #ddd;padding:12px 0}.row{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
figure{margin:0 0 6px;max-width:240px}figcaption{font-size:12px;color:#444}
.pic{position:relative;display:inline-block;line-height:0}.box{position:absolute;border:1px solid #0f0;box-shadow:0 0 0 1px #000}
img{display:block}img.crop{width:288px;max-width:none;image-rendering:pixelated}
figure:has(img.crop){max-width:none}
.toggle{cursor:pointer}.toggle.showing-input figcaption::after{content:" (showing the input)";color:#b00}
"""

_JS = """
function showInput(fig, on){
  const img = fig.querySelector('img'); if(!img) return;
  if(img._own === undefined) img._own = img.src;
  img.src = on ? fig.closest('.card').querySelector(fig.dataset.input).src : img._own;
  fig.classList.toggle('showing-input', on);
}
document.querySelectorAll('figure.toggle').forEach(f => f.addEventListener('click', () => showInput(f, !f.classList.contains('showing-input'))));
document.getElementById('all-inputs').addEventListener('change', e => document.querySelectorAll('figure.toggle').forEach(f => showInput(f, e.target.checked)));
"""


def render_report(title: str, rows: list[dict], columns: list[Column], best: dict[str, str], gallery: Gallery,
                  report_path: Path, notes: list[str] = (), failures: list[str] = ()) -> str:
    """The whole HTML document. `rows` are the models' summary rows (key "model" names each), `best`
    column key -> the best model's label, `notes` lines under the table (rFID's sample note)."""
    labels = [r["model"] for r in rows]
    ordered = gallery.worst_first()
    series = {label: [e.recons[label].metrics.get("psnr") if label in e.recons else None for _, e in ordered] for label in labels}
    note_html = "".join(f'<p class="note">{_esc(n)}</p>' for n in notes)
    fail_html = ("<h2>Failed</h2><ul>" + "".join(f"<li>{_esc(f)}</li>" for f in failures) + "</ul>") if failures else ""
    cards = "".join(_card(name, entry, labels, report_path.parent, i) for i, (name, entry) in enumerate(ordered))
    legend = (f"Error heatmaps: mean absolute error over RGB, black 0 to pale yellow {HEATMAP_FULL_SCALE * 255:.0f}/255 and above. "
              "Crops are at full resolution, enlarged 3x; the green box marks the crop on the input.")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{GENERATOR_TAG}<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{_esc(title)}</title><style>{_CSS}</style></head>
<body><h1>{_esc(title)}</h1>
{_table(rows, columns, best)}{note_html}{fail_html}
<h2>PSNR per image</h2>{psnr_chart(series, [n for n, _ in ordered])}
<h2>Images, worst first</h2><p class="note">{_esc(legend)}</p>
<label><input type="checkbox" id="all-inputs"> show the inputs in place of the reconstructions (or click one)</label>
{cards}
<script>{_JS}</script></body></html>
"""
