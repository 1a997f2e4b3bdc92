"""The one skeleton encode, decode and roundtrip share: check setup, plan, load, shard, run, gather, print.

    check -o/--report  ->  expand + plan (every output decided, before any model loads)  ->  take this
    rank's share  ->  load the model(s)  ->  run with a progress bar  ->  gather to rank 0  ->  report

Setup problems (an -o that is a file, a --report that is a folder or cannot be written, no input at
all) are usage errors (exit 2) found before any work; everything about one input is that input's
result (exit 1 when some failed).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import typer

from ..errors import EXIT_USAGE
from .output import (
    Reporter,
    plain_warnings,
    print_json,
    print_table,
    printable,
    summary_line,
    warn,
    write_report,
)

Engine = Callable[[list, Callable[[dict], None]], tuple[list[dict], dict]]


@dataclass
class BatchCommand:
    verb: str  # "encode": the progress bar's label
    past: str  # "encoded": the summary line's verb
    suffixes: tuple[str, ...]  # what it reads from folders and globs
    name: Callable  # plan one job: set its kind and outputs (vaecli.batch.plan.plan_jobs)
    start: Callable[[], Engine]  # load what the run needs; returns engine(jobs, on_result) -> (results, summary)
    metrics: bool = False  # roundtrip: metric means, a table, --report
    html: Callable[[Path, list, dict], str] | None = None  # --report FILE.html: (path, results, summary) -> the document


def _probe_writable(folder: Path, option: str, value: Path) -> None:
    from ..io.atomic import scratch_path

    try:
        with scratch_path(folder):
            pass
    except OSError as e:
        raise typer.BadParameter(f"{value}: cannot write in {folder} ({e.strerror or e})", param_hint=option) from None


def check_output_folder(output: Path | None) -> None:
    """-o must be a folder, or not exist yet below a folder this process can write in."""
    if output is None:
        return
    if output.exists() and not output.is_dir():
        raise typer.BadParameter(f"{output}: exists and is not a folder", param_hint="-o/--output")
    ancestor = output
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise typer.BadParameter(f"{output}: {ancestor} is a file, not a folder", param_hint="-o/--output")
    _probe_writable(ancestor, "-o/--output", output)


def check_report(report: Path | None, html: bool = False, overwrite: bool = False) -> None:
    """--report must name a .csv or .json (or, where the command renders one, .html) file whose folder exists and
    can be written in; an existing file is replaced only when vaecli wrote it (a report) or with --overwrite, the
    output-safety rule every other output follows."""
    if report is None:
        return
    from .output import is_vaecli_report

    if report.is_file() and not overwrite and not is_vaecli_report(report):
        raise typer.BadParameter(f"{report}: exists and is not a report vaecli wrote; name another file or pass --overwrite", param_hint="--report")
    kinds = (".csv", ".json", ".html") if html else (".csv", ".json")
    if report.suffix.lower() not in kinds:
        raise typer.BadParameter(f"{report}: use a {', '.join(kinds[:-1])} or {kinds[-1]} file", param_hint="--report")
    if report.is_dir():
        raise typer.BadParameter(f"{report}: is a folder; name a file in it, e.g. {report / 'report.csv'}", param_hint="--report")
    parent = report.parent
    if not parent.is_dir():
        raise typer.BadParameter(f"{report}: its folder {parent} does not exist", param_hint="--report")
    _probe_writable(parent, "--report", report)


def run_batch(cmd: BatchCommand, inputs: list[str], output: Path | None, json_: bool, quiet: bool, report: Path | None = None,
              overwrite: bool = False) -> int:
    """Run one batch command end to end; returns its exit code (0 all done, 1 some inputs failed)."""
    from ..batch.distributed import current_world, gather_report, shard
    from ..batch.inputs import expand_inputs
    from ..batch.plan import plan_jobs
    from ..batch.report import exit_code, with_metric_means
    from ..errors import VaecliError

    check_output_folder(output)
    check_report(report, html=cmd.html is not None, overwrite=overwrite)
    world = current_world()  # under torchrun: this rank's share of the inputs, rank 0 reports
    with plain_warnings():
        found = expand_inputs(inputs, cmd.suffixes, warn, exclude=output)
        if not found:
            raise VaecliError(f"nothing to {cmd.verb}: no {', '.join(cmd.suffixes)} file in {printable(' '.join(inputs))}")
        jobs = shard(plan_jobs(found, cmd.name), world)
        engine = cmd.start()
        with Reporter(len(jobs), cmd.verb, json_, quiet or not world.reports) as reporter:
            results, summary = engine(jobs, reporter)
    merged = gather_report(results, summary, world)
    if merged is None:  # not rank 0: rank 0 reports for everyone
        return exit_code(results)
    results, summary = merged
    if cmd.metrics:
        summary = with_metric_means(summary, results)
    if json_:
        print_json({"results": results, "summary": summary})
    elif cmd.metrics and not quiet:
        print_table(results, summary)
    elif not quiet:
        print(summary_line(cmd.past, summary))
    if report is not None:
        try:  # checked before the run; if it still fails now, the results above are not lost with it
            html = cmd.html(report, results, summary) if report.suffix.lower() == ".html" else None
            write_report(report, results, summary, html)
        except OSError as e:
            print(f"Error: --report {printable(str(report))}: cannot write ({e.strerror or e})", file=sys.stderr)
            return EXIT_USAGE
    return exit_code(results)
