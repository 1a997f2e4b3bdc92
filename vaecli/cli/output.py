"""What the commands print: the progress bar and per-file error lines (stderr), tables and JSON (stdout), report files.

Results go to stdout (a summary line or table, or one JSON document with --json); progress, per-file
errors and warnings go to stderr. File names are shown with control characters escaped as Python
writes them (a newline in a name prints as \\n), so one name can never break a table or fake a line;
JSON escapes them itself. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sys
import warnings
from pathlib import Path

METRIC_COLUMNS = ("psnr", "ssim", "lpips")
CSV_FIELDS = ["input", "output", "status", "error", *METRIC_COLUMNS, "frames"]  # --report FILE.csv, one row per input


def printable(text: str) -> str:
    """`text` with every non-printable character (newline, tab, escape, invalid UTF-8...) escaped, repr-style."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class Reporter:
    """Progress bar on a terminal (never with --quiet/--json), one stderr line per failed input."""

    def __init__(self, total: int, verb: str, json_mode: bool, quiet: bool):
        from rich.console import Console

        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.progress = None
        if total and self.err.is_terminal and not quiet and not json_mode:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(TextColumn(verb), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=self.err, transient=True)
            self.task = self.progress.add_task(verb, total=total)

    def __enter__(self) -> "Reporter":
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, result: dict) -> None:
        if result["status"] == "failed":
            self.err.print(f"failed: {printable(result['error'])}", markup=False)
        if self.progress is not None:
            self.progress.advance(self.task)


@contextlib.contextmanager
def plain_warnings():
    """Warnings as one `Warning: ...` line on stderr (names escaped), not Python's file:line form.

    Each distinct message is said once per run, and never raised: a PYTHONWARNINGS=error set for some other
    program must not turn a note about a run into its failure.
    """

    said = set()  # Python's own once-per-location memory is reset whenever any library enters catch_warnings

    def show(message, category, filename, lineno, file=None, line=None):
        text = printable(message)
        if text not in said:
            said.add(text)
            print(f"Warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")  # shown (once, by `said`), never raised
        for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=quiet)  # hidden from users, as Python's default filters hide them
        warnings.showwarning = show
        yield


def warn(message: str) -> None:
    """A one-line `Warning: ...` on stderr, every time (Python's warnings show each message once per process)."""
    print(f"Warning: {printable(message)}", file=sys.stderr)


def _finite(value):
    """JSON has no NaN/inf: a PSNR of identical images (inf) or SSIM of a tiny image (NaN) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def json_text(document: dict) -> str:
    """The JSON that --json prints and a .json report holds (NaN/inf as null)."""
    return json.dumps(_finite(document), indent=2) + "\n"


def print_json(document: dict) -> None:
    sys.stdout.write(json_text(document))


def summary_line(verb: str, summary: dict) -> str:
    return f"{verb} {summary['ok']} ok, {summary['skipped']} skipped, {summary['failed']} failed of {summary['total']} in {summary['seconds']:.1f} s"


def print_table(results: list[dict], summary: dict) -> None:
    """roundtrip's table: one row per input with its metrics, then their means and the summary line."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    shown = [c for c in METRIC_COLUMNS if any(r.get(c) is not None for r in results)]
    table = Table(show_edge=False)
    table.add_column("input", overflow="fold")
    table.add_column("status")
    for c in shown:
        table.add_column(c.upper(), justify="right")

    def fmt(v, c):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.2f}" if c == "psnr" else f"{v:.4f}"

    for r in results:
        table.add_row(Text(printable(r["input"])), r["status"], *(fmt(r.get(c), c) for c in shown))
    if results:
        table.add_section()
        table.add_row("mean", "", *(fmt(summary.get(f"mean_{c}"), c) for c in shown))
    console = Console(highlight=False, width=max(100, Console().width))
    console.print(table)
    if "rfid_images" in summary:
        console.print(f"rFID {fmt(summary['rfid'], 'rfid')} ({summary['rfid_note']})", markup=False)
    console.print(summary_line("measured", summary), markup=False)


def report_text(path: Path, results: list[dict], summary: dict) -> str:
    """--report: .json (the same document as --json) or .csv (one row per input)."""
    if path.suffix.lower() == ".json":
        return json.dumps(_finite({"results": results, "summary": summary}), indent=2) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(_finite(results))
    return buf.getvalue()


def is_vaecli_report(path: Path) -> bool:
    """Whether `path` holds a report vaecli wrote (so a rerun may replace it): our JSON document's keys, our CSV
    header, or the generator tag of our HTML. Anything else is the user's and is never replaced silently."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":  # a JSON document is judged whole, so it is read whole, once
            document = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(document, dict) and ({"results", "summary"} <= document.keys() or {"models", "best", "results"} <= document.keys())
        with open(path, "rb") as f:
            head = f.read(1 << 16).decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return False
    if suffix == ".csv":
        return head.startswith(",".join(CSV_FIELDS[:4]))  # the fixed columns; the metric ones vary by version
    if suffix == ".html":
        from ..quality.report_html import GENERATOR_TAG

        return GENERATOR_TAG in head
    return False


def write_report(path: Path, results: list[dict], summary: dict, text: str | None = None) -> None:
    """Write --report atomically (its folder was checked before the run started); `text`: an already rendered document (HTML)."""
    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(report_text(path, results, summary) if text is None else text, encoding="utf-8")
