"""Where downloads go and what may be said about them: hub endpoints, tokens, and their redaction.

A token is a password: it is cleaned once (a token file saved on Windows ends in `\\r\\n`, which
HTTP libraries refuse with an error that quotes the header, token included), sent only to the hosts
it belongs to, and removed from any message before it is printed. No network code here, so the
command line can redact its errors without importing an HTTP library.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from ..errors import DownloadError

HF_URL = "https://huggingface.co"
HF_HOST = "huggingface.co"
TOKEN_ENV = "HF_TOKEN"
_TRUE = {"1", "true", "yes", "on"}
# What a secret looks like when it is not one we were given: an Authorization header's value, a
# token in a URL's query, a Hugging Face token (hf_ then 16 or more letters and digits, unlike the
# file names that start with hf_, which have `_`, `-` or `.` early on).
_SECRET_PATTERNS = (
    (re.compile(r"\b(Bearer\s+)[^\s'\"]+", re.IGNORECASE), r"\1***"),
    (re.compile(r"([?&](?:token|access_token|api_key)=)[^&\s'\"]+", re.IGNORECASE), r"\1***"),
    (re.compile(r"\bhf_[A-Za-z0-9]{16,}"), "hf_***"),
)
REDACTED = "***"


def is_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("VAECLI_OFFLINE", "HF_HUB_OFFLINE"))


def hub_endpoint() -> str:
    """The Hugging Face endpoint: VAECLI_ENDPOINT, else HF_ENDPOINT, else huggingface.co."""
    return (os.environ.get("VAECLI_ENDPOINT") or os.environ.get("HF_ENDPOINT") or HF_URL).rstrip("/")


def resolve_url(url: str) -> str:
    """Point https://huggingface.co URLs at the configured mirror; other URLs are left alone."""
    if url == HF_URL or url.startswith(HF_URL + "/"):
        return hub_endpoint() + url[len(HF_URL) :]
    return url


def hub_token_hosts() -> frozenset[str]:
    """Hosts a Hugging Face token may be sent to: huggingface.co and the configured mirror."""
    return frozenset({HF_HOST, (urlsplit(hub_endpoint()).hostname or HF_HOST).lower()})


def url_host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def display_url(url: str) -> str:
    """A URL fit for messages: any user:password part dropped."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts)


def clean_token(token: str | None) -> str | None:
    """The token without surrounding whitespace (None when nothing is left).

    Whitespace or control characters inside it cannot be sent in a header; the error says so
    without showing any of it.
    """
    if token is None:
        return None
    token = token.strip()
    if not token:
        return None
    if any(not ch.isprintable() or ch.isspace() for ch in token):
        raise DownloadError(
            f"the token (--token or {TOKEN_ENV}) has whitespace or control characters inside it; check how it was copied or saved"
        )
    return token


def resolve_token(explicit: str | None = None) -> str | None:
    """The token to use: `explicit` (--token), else HF_TOKEN; cleaned."""
    return clean_token(explicit or os.environ.get(TOKEN_ENV) or None)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every given secret (as given and stripped) and anything that looks like a token removed.

    The last guard before any output: used on every message that leaves the downloader, and on
    every error the command line prints, whatever raised it.
    """
    for secret in secrets:
        for form in {secret, secret.strip()} if secret else ():
            if len(form) >= 4:  # a one-letter "token" would blank out ordinary words
                text = text.replace(form, REDACTED)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text
