"""One error hierarchy. Every error a user can cause is a VaecliError with a one-line message.

The CLI maps these to `Error: <message>` on stderr and to `exit_code`; anything else is a bug and
shows a traceback only when VAECLI_DEBUG=1.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_SOME_FAILED = 1  # some inputs failed, all others were processed
EXIT_USAGE = 2  # usage or setup error: bad option, unknown model, missing weights, bad config
EXIT_INTERRUPTED = 130  # Ctrl-C; finished outputs are complete, nothing partial is left


class VaecliError(Exception):
    """Base class: a user-facing, one-line message."""

    exit_code = EXIT_USAGE


class ConfigError(VaecliError):
    """A model config is unreadable, has unknown keys or impossible values."""


class CheckpointError(VaecliError):
    """A weights file is missing, truncated, of the wrong layout, or does not match the config."""


class UnknownModelError(VaecliError):
    """A model name that the registry does not know."""


class WeightsNotCachedError(VaecliError):
    """A registry model whose weights are not in the cache; the message carries the fetch command."""


class DownloadError(VaecliError):
    """A download failed (network, HTTP status, size or hash mismatch); nothing was left behind."""


class RemoteMissingError(DownloadError):
    """Every URL tried answered 404: the server has no such file (a repository may hold another variant)."""


class OfflineError(DownloadError):
    """A download was asked for while the offline switch is on."""


class InputError(VaecliError):
    """One input file cannot be processed (corrupt, wrong kind, wrong channel count, NaN...).

    Raised per file: the batch pipeline records it and goes on with the other inputs.
    """

    exit_code = EXIT_SOME_FAILED
