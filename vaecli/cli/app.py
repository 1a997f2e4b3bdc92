"""The `vaecli` command line: thin commands over the library, one place mapping errors to exit codes.

Exit codes: 0 all inputs done; 1 some inputs failed (all others done); 2 usage or setup error;
130 interrupted (finished outputs are complete; rerun to do the rest).
"""

from __future__ import annotations

import os
import sys

import typer

# Typer < 0.26 raises click's exceptions, later ones those of its vendored copy of click; both
# re-export the same three names, so take the classes from Typer itself and never import click
# (it is not a dependency of vaecli, nor of current Typer).
_ExitExc = typer.Exit
_AbortExc = (typer.Abort, KeyboardInterrupt)
_ClickExc = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")  # usage errors' base

from .. import __version__
from ..errors import EXIT_INTERRUPTED, EXIT_USAGE, VaecliError
from . import help_format

EXIT_CODES_HELP = (
    "Exit codes: 0 all inputs done; 1 some inputs failed (the others were done); "
    "2 usage or setup error (bad option, unknown model, missing weights, bad config); 130 interrupted."
)

app = typer.Typer(
    name="vaecli",
    cls=help_format.Group,
    help="Encode images and video into the latent space of latent-diffusion VAEs, decode latents, "
    "measure reconstruction quality, fetch weights.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vaecli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """vaecli: latent-diffusion VAEs on the command line."""
    from ..runtime.allocator import keep_freed_memory

    keep_freed_memory()  # a command-line run: reuse freed activation memory instead of faulting it in anew


INTERRUPTED_MESSAGE = "Interrupted: finished outputs are complete; rerun the same command to do the rest."


def _debug() -> bool:
    return os.environ.get("VAECLI_DEBUG") == "1"


def _secrets(argv: list[str]) -> list[str]:
    """The tokens this run was given (--token, HF_TOKEN): no message may show them."""
    found = [os.environ.get("HF_TOKEN", "")]
    for i, arg in enumerate(argv):
        if arg == "--token" and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif arg.startswith("--token="):
            found.append(arg[len("--token=") :])
    return [s for s in found if s]


def _say(text: str, argv: list[str]) -> None:
    """Print to stderr with every token removed, whatever produced the text."""
    from ..weights.hub import redact

    print(redact(text, _secrets(argv)), file=sys.stderr, end="" if text.endswith("\n") else "\n")


def _usage_line(error) -> str:
    """A usage error as one line (Click shows four: usage, a hint, a blank line, the error), with where to get help."""
    ctx = getattr(error, "ctx", None)
    hint = f" (see '{ctx.command_path} -h')" if ctx is not None else ""
    return " ".join(error.format_message().split()) + hint


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn every outcome into one exit code.

    Every message printed here is redacted (hub.redact): an exception from any library can quote
    a request header or URL that holds a token. With VAECLI_DEBUG=1 the traceback is printed, redacted too.
    """
    args = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        rv = app(args=argv, prog_name="vaecli", standalone_mode=False)
    except _ExitExc as e:
        sys.exit(e.exit_code)
    except _ClickExc as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `vaecli` alone: the help it stands for
            import io

            shown = io.StringIO()
            e.show(file=shown)
            _say(shown.getvalue(), args)
        else:
            _say(f"Error: {_usage_line(e)}", args)
        sys.exit(EXIT_USAGE if e.exit_code == 2 else e.exit_code)
    except _AbortExc:
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:
        if _debug():
            import traceback

            _say(traceback.format_exc(), args)
        elif isinstance(e, VaecliError):
            _say(f"Error: {e}", args)
        else:  # a bug: one line unless debugging
            _say(f"Error: internal error: {type(e).__name__}: {e} (set VAECLI_DEBUG=1 for a traceback)", args)
        sys.exit(e.exit_code if isinstance(e, VaecliError) else EXIT_USAGE)
    if rv == EXIT_INTERRUPTED:  # Typer returns Ctrl-C inside a command as exit code 130
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
    sys.exit(rv if isinstance(rv, int) else 0)


# Commands live beside this module; each one's function is registered here, one line each.
from . import fetch  # noqa: E402

app.command("fetch-weights", cls=help_format.Command)(fetch.fetch_weights)
from . import codec  # noqa: E402

app.command("encode", cls=help_format.Command)(codec.encode)
app.command("decode", cls=help_format.Command)(codec.decode)
app.command("roundtrip", cls=help_format.Command)(codec.roundtrip)
from . import inspect  # noqa: E402

app.command("models", cls=help_format.Command)(inspect.models)
app.command("info", cls=help_format.Command)(inspect.info)
from . import compare  # noqa: E402

app.command("compare", cls=help_format.Command)(compare.compare)
from . import stats  # noqa: E402

app.command("stats", cls=help_format.Command)(stats.stats)
