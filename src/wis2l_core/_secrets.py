"""Keeping passwords and tokens out of ``repr()``, logs and error messages (I/O-free).

The drivers take a secret in more places than ``user:password@``, and each place is
redacted here, in one module, for every caller (``Settings.__repr__``, the health report,
the runtime's and the CLI's messages):

- URL userinfo ``scheme://user:PASSWORD@host`` (libpq, redis-py, nats-py), also
  ``redis://:PASSWORD@host`` and percent-encoded passwords;
- a NATS token as the whole userinfo, ``nats://TOKEN@host`` (also ``tls``, ``ws``, ``wss``);
- query parameters ``?password=`` (libpq, redis-py) and ``sslpassword=`` (libpq), with the
  parameter name itself possibly percent-encoded;
- libpq key/value connection strings, ``host=db password='s3 cret'`` (quoted or not, with
  backslash escapes).

:func:`secrets_in` pulls the secrets themselves out of URLs (raw and decoded), so a driver
message that quotes a password without its URL can still be scrubbed by :func:`scrub`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import unquote, unquote_plus

__all__ = ["MASK", "ServerURLs", "redact_url", "scrub", "secrets_in", "secrets_of"]

MASK = "***"
"""What a secret is replaced with."""

QUERY_SECRETS = frozenset({"password", "sslpassword"})
"""Query parameters (libpq, redis-py) and conninfo keywords (libpq) that hold a secret."""

TOKEN_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})
"""Schemes whose userinfo without a colon is a token (nats-py), not a user name."""

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
_NEXT_URL = re.compile(r",(?=\s*[A-Za-z][A-Za-z0-9+.\-]*://)")
_QUERY_PARAM = re.compile(r"(?P<head>[?&](?P<key>[^=&?#]*)=)(?P<value>[^&]*)")
_CONNINFO_SECRET = re.compile(
    # libpq conninfo: a value is single-quoted (with \' and \\ escapes) or runs to the next
    # blank (C isspace), a backslash escaping the next character (a blank included).
    r"(?is)(?P<head>(?<![\w.])(?:ssl)?password[ \t\n\v\f\r]*=[ \t\n\v\f\r]*)"
    r"(?:'(?:\\.|\\\Z|[^'\\])*'?|(?:\\.|\\\Z|[^ \t\n\v\f\r\\])+)"
)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_KEYWORD_IN_TEXT = re.compile(
    r"(?i)(?P<key>password|passwd|pwd|secret|token)(?P<sep>\s*[=:]\s*)"
    r"(?:'[^']*'|\"[^\"]*\"|[^\s,;&]+)"
)
_MIN_SECRET = 3
"""Shorter secrets are not searched for in free text (they would mask half a message)."""


def redact_url(url: str) -> str:
    """Return ``url`` with every password and token replaced by ``***``.

    Takes a URL (``postgresql://``, ``redis://``, ``nats://``, ...), a comma-separated list
    of them (``NATS_URL``), or a libpq key/value string (``host=db password=...``).

    >>> redact_url("postgresql://ada:s3cret@db:5432/wis2l")
    'postgresql://ada:***@db:5432/wis2l'
    >>> redact_url("nats://s3cret@n1:4222")
    'nats://***@n1:4222'
    >>> redact_url("postgresql://ada@db/wis2l?sslmode=require&password=s3cret")
    'postgresql://ada@db/wis2l?sslmode=require&password=***'
    >>> redact_url("host=db password='s3 cret' dbname=wis2l")
    'host=db password=*** dbname=wis2l'

    Args:
        url: the URL or connection string.

    Returns:
        The same text with the secrets masked; everything else is kept as it was.
    """
    return ",".join(_redact_one(part) for part in _NEXT_URL.split(url))


def _redact_one(url: str) -> str:
    match = _SCHEME.match(url.lstrip())
    if match is None:
        if "=" in url:  # libpq key/value
            return _CONNINFO_SECRET.sub(lambda m: m["head"] + MASK, url)
        head, rest, scheme = "", url, "nats"  # nats-py reads "TOKEN@host" as nats://
    else:
        end = len(url) - len(url.lstrip()) + match.end()
        head, rest, scheme = url[:end], url[end:], match[1].lower()
    at = _userinfo_end(rest)
    if at >= 0:
        userinfo, host = rest[:at], rest[at + 1 :]
        user, colon, _password = userinfo.partition(":")
        if colon:
            userinfo = f"{user}:{MASK}"
        elif scheme in TOKEN_SCHEMES:
            userinfo = MASK
        rest = f"{userinfo}@{host}"
    return head + _QUERY_PARAM.sub(_mask_param, rest)


def _userinfo_end(rest: str) -> int:
    """Where the userinfo of ``rest`` (a URL after ``scheme://``) ends: its last ``@``.

    In a well-formed URL that is the only ``@``. A password with an unencoded ``/``, ``?``,
    ``#`` or ``@`` is read differently by each parser (libpq stops at the first ``/`` or
    ``@``, Python at the first ``/?#``); masking up to the last ``@`` hides it under every
    reading (``Settings`` refuses such URLs; this is for messages about them).
    """
    return rest.rfind("@")


def _mask_param(match: re.Match[str]) -> str:
    if unquote_plus(match["key"]).strip().lower() in QUERY_SECRETS:
        return match["head"] + MASK
    return match[0]


def secrets_in(urls: Iterable[str]) -> tuple[str, ...]:
    """The passwords and tokens written in ``urls``, as written and decoded.

    Args:
        urls: URLs or libpq key/value strings, as :func:`redact_url` takes them.

    Returns:
        Every secret found (no order), for :func:`scrub`.
    """
    found: set[str] = set()
    for text in urls:
        for url in _NEXT_URL.split(text):
            found.update(_secrets_of_one(url))
    return tuple(s for s in found if s)


def _secrets_of_one(url: str) -> set[str]:
    raw: list[str] = []
    match = _SCHEME.match(url.lstrip())
    if match is None and "=" in url:
        for m in _CONNINFO_SECRET.finditer(url):
            value = m[0][len(m["head"]) :]
            raw.append(value)
            unquoted = value[1:-1] if value[:1] == "'" and value[-1:] == "'" else value
            raw.append(re.sub(r"\\(.)", r"\1", unquoted, flags=re.S))
        return set(raw)
    scheme = "nats" if match is None else match[1].lower()
    rest = url if match is None else url.lstrip()[match.end() :]
    at = _userinfo_end(rest)
    if at >= 0:
        userinfo = rest[:at]
        _user, colon, password = userinfo.partition(":")
        if colon:
            raw.append(password)
        elif scheme in TOKEN_SCHEMES:
            raw.append(userinfo)
    for m in _QUERY_PARAM.finditer(rest):
        if unquote_plus(m["key"]).strip().lower() in QUERY_SECRETS:
            raw.append(m["value"])
    found: set[str] = set()
    for value in raw:
        found.update({value, unquote(value), unquote_plus(value)})
    return found


class ServerURLs(Protocol):
    """What :func:`secrets_of` reads: the server URLs of a ``Settings``."""

    @property
    def database_url(self) -> str:
        """The PostgreSQL URL."""

    @property
    def redis_url(self) -> str:
        """The Redis URL."""

    @property
    def nats_urls(self) -> tuple[str, ...]:
        """The NATS URLs."""


def secrets_of(settings: ServerURLs) -> tuple[str, ...]:
    """The passwords and NATS tokens in the settings' URLs, raw and percent-decoded.

    Args:
        settings: a ``Settings`` (or anything with the same three fields), whose
            ``database_url``, ``redis_url`` and ``nats_urls`` are read.

    Returns:
        The secrets, for :func:`scrub` (and ``HealthChecker(secrets=...)``).
    """
    return secrets_in((settings.database_url, settings.redis_url, *settings.nats_urls))


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask the secrets in free text, such as a driver's error message.

    Every URL in ``text`` goes through :func:`redact_url`, ``password=...``-style values
    (also ``token``, ``secret``, ``pwd``) are masked, and so is every string in
    ``secrets`` of three characters or more, longest first.

    Args:
        text: the message.
        secrets: known secrets (see :func:`secrets_of`).

    Returns:
        ``text`` with ``***`` for each secret.
    """
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m[0]), text)
    text = _KEYWORD_IN_TEXT.sub(rf"\g<key>\g<sep>{MASK}", text)
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= _MIN_SECRET:
            text = text.replace(secret, MASK)
    return text
