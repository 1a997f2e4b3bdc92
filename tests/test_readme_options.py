"""The README's commands and options tables against what the CLI declares, both ways, so they cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from vaecli.cli.app import app

README = Path(__file__).resolve().parents[1] / "README.md"
ROOT = "(vaecli itself)"


def _table_after(heading: str) -> list[list[str]]:
    """The cells of the first Markdown table after `heading` (escaped pipes kept inside their cell)."""
    text = README.read_text(encoding="utf-8")
    lines = text[text.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def _names(cell: str) -> frozenset[str]:
    """`-o/--output DIR` -> {-o, --output}; `--scaled/--unscaled` -> both."""
    first = re.search(r"`([^`]+)`", cell).group(1).split()[0]
    return frozenset(first.split("/"))


def _declared() -> dict[str, set[frozenset[str]]]:
    """command -> the option names of each option it takes (the help option aside), from Typer's model."""
    group = typer.main.get_command(app)
    out = {name: {frozenset(p.opts + p.secondary_opts) for p in cmd.params if p.param_type_name == "option"} for name, cmd in group.commands.items()}
    out[ROOT] = {frozenset(p.opts + p.secondary_opts) for p in group.params if p.param_type_name == "option"}
    return out


def _documented() -> dict[str, set[frozenset[str]]]:
    out: dict[str, set[frozenset[str]]] = {}
    for option, commands, _ in _table_after("### Options"):
        for command in (ROOT,) if commands == ROOT else commands.split(", "):
            out.setdefault(command, set()).add(_names(option))
    return out


def test_every_option_in_help_is_in_the_readme_and_back():
    declared, documented = _declared(), _documented()
    missing = {c: sorted("/".join(sorted(o)) for o in opts - documented.get(c, set())) for c, opts in declared.items()}
    extra = {c: sorted("/".join(sorted(o)) for o in opts - declared.get(c, set())) for c, opts in documented.items()}
    assert not any(missing.values()), f"options the CLI takes that the README's table lacks: {missing}"
    assert not any(extra.values()), f"options the README documents that the CLI does not take: {extra}"


def test_every_command_is_in_the_readme_commands_table_and_back():
    listed = {re.match(r"`vaecli ([a-z-]+)", row[0]).group(1) for row in _table_after("## Commands")}
    assert listed == set(typer.main.get_command(app).commands)
