"""`--help` as Typer renders it for a user: flags without a value type, plain usage lines, JSON shapes that match what is printed."""

from __future__ import annotations

import json
import re

import pytest

from tests.clitools import run_main, vaecli

COMMANDS = ("encode", "decode", "roundtrip", "fetch-weights", "models", "info", "stats")


def _help(capsys, *command) -> str:
    code, out, err = run_main(capsys, *command, "--help")
    assert code == 0, err
    return out


@pytest.mark.parametrize("command", [(), *((c,) for c in COMMANDS)])
def test_flags_show_no_value_type_and_usage_lines_read_plainly(capsys, command):
    text = _help(capsys, *command)
    assert "<bool>" not in text and "bool" not in text.lower().replace("boolean", "")
    help_row = next(line for line in text.splitlines() if "--help" in line)
    assert re.search(r"--help\s+-h\s+Show this message", help_row), help_row
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "...." not in usage, usage


def test_usage_line_of_a_variadic_argument(capsys):
    assert re.search(r"Usage: vaecli encode \[OPTIONS\] INPUT\.\.\.\s*$", _help(capsys, "encode"), re.M)
    assert re.search(r"Usage: vaecli info \[OPTIONS\] FILE\.\.\.\s*$", _help(capsys, "info"), re.M)
    assert re.search(r"Usage: vaecli fetch-weights \[OPTIONS\] \[NAMES\.\.\.\]\s*$", _help(capsys, "fetch-weights"), re.M)


def test_a_flag_in_the_real_executable_help_has_no_type(tmp_path):
    """The same through `python -m vaecli`, as a shell user sees it (wide terminal: one row per option)."""
    p = vaecli("roundtrip", "--help", env={"COLUMNS": "200"})
    assert p.returncode == 0
    rows = {m.group(1): m.group(2) for m in re.finditer(r"(--[a-z-]+)\s+(?:-\w\s+)?(\S.*?)\s{2,}", p.stdout)}
    assert rows["--overwrite"].startswith("Redo outputs") and rows["--compare"].startswith("Also save")
    assert rows["--seed"] == "<int>"  # options that take a value still show its type


def _keys(value, found: set[str]) -> set[str]:
    """Every key of every object in a JSON document."""
    if isinstance(value, dict):
        for k, v in value.items():
            found.add(k)
            _keys(v, found)
    elif isinstance(value, list):
        for v in value:
            _keys(v, found)
    return found


def _json_help_names(text: str) -> set[str]:
    flat = " ".join(line.strip("│ ") for line in text.splitlines())
    shape = re.search(r"Print one JSON document on stdout:\s*(\{.*\})\.", flat).group(1)
    return set(re.findall(r"[a-z_]+", shape))


def test_models_and_info_help_describe_the_json_they_print(capsys, tmp_path, tiny_weights):
    code, out, _ = run_main(capsys, "models", "--json")
    assert code == 0 and _keys(json.loads(out), set()) == _json_help_names(_help(capsys, "models"))
    code, out, _ = run_main(capsys, "info", tiny_weights, "--json")
    doc = json.loads(out)
    doc["files"][0]["metadata"] = {}  # the file's own keys, whatever it holds
    printed = _keys(doc, set())
    assert code == 0 and printed == _json_help_names(_help(capsys, "info"))
