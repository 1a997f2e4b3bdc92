"""A real headless browser for the HTML report tests: Debian's chromium, installed when missing and apt can."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

# Run in the page once it has loaded: what a reader would see broken, and anything fetched from outside.
_CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const out = document.createElement('pre');
  out.id = 'browser-check';
  out.textContent = JSON.stringify({
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    table: !!document.querySelector('table#summary'),
    rows: document.querySelectorAll('table#summary tbody tr').length,
    chart_points: document.querySelectorAll('#psnr-chart circle').length,
    cards: [...document.querySelectorAll('section.card h3')].map(h => h.textContent),
    fetched: performance.getEntriesByType('resource').map(r => r.name).filter(n => !n.startsWith('data:')),
  });
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    """The chromium executable; installed with apt-get when absent (as .ci/run does), else the test is skipped."""
    found = shutil.which("chromium")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True, timeout=1200)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium is not installed and cannot be installed here (apt-get install chromium)")
    return found


def _run(args: list[str]) -> subprocess.CompletedProcess:
    # no sandbox: tests may run as root; no DNS: a self-contained page must not need any
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=120)


def check_page(report: Path) -> dict:
    """Open a copy of `report` (beside it, the check script appended) and return what the page found."""
    probe = report.with_name(report.stem + ".probe.html")
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", _CHECK + "</body>"), encoding="utf-8")
    try:
        done = _run(["--virtual-time-budget=10000", "--dump-dom", probe.resolve().as_uri()])
    finally:
        probe.unlink()
    m = re.search(r'<pre id="browser-check">(.*?)</pre>', done.stdout, re.S)
    assert m, f"the page did not run its check: {done.stderr[-2000:]}"
    return json.loads(m.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"'))


def screenshot(report: Path, png: Path, width: int = 1000, height: int = 1500) -> None:
    done = _run([f"--window-size={width},{height}", f"--screenshot={png.resolve()}", report.resolve().as_uri()])
    assert png.is_file(), done.stderr[-2000:]
