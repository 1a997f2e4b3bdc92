"""How `--help` shows options and arguments: flags without a value type, arguments as `NAME...` in usage lines.

Typer's help (0.26 and later) gives every option a type column, flags included: `--overwrite <bool>`,
`--help -h <bool>`, which reads as if the flag took a value; and it writes a required variadic
argument as `{INPUT...}...` in the usage line. The app's group and every command use these classes
(cli/app.py), so the fix is made once, for every option, the help option among them. Nothing here
imports click: the classes come from Typer itself (current Typer vendors its own click).
"""

from __future__ import annotations

from typer.core import TyperCommand, TyperGroup


def _flags_without_type(params: list) -> list:
    """An empty metavar is what Typer (and click before it) shows for a flag: no type, no value."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def _usage_piece(param) -> str:
    """`INPUT...` for a required variadic argument, `[FILE]` for an optional one, as usage lines conventionally read."""
    name = param.metavar or param.name.upper()
    if param.nargs != 1 and not name.endswith("..."):
        name += "..."
    return name if param.required else f"[{name}]"


class Command(TyperCommand):
    def get_params(self, ctx) -> list:
        return _flags_without_type(super().get_params(ctx))

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if getattr(param, "param_type_name", "") == "argument":
                pieces.append(_usage_piece(param))
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


class Group(TyperGroup):
    def get_params(self, ctx) -> list:
        return _flags_without_type(super().get_params(ctx))
