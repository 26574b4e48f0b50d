"""The URL grammar of the three drivers: ``DATABASE_URL``, ``REDIS_URL``, ``NATS_URL``.

What :class:`~wis2l_core.config.Settings` accepts as a server address, checked the way
libpq, redis-py and nats-py will read it: schemes, hosts and ports, the multi-host forms
(libpq's ``h1:5432,h2:5433``, ``redis+cluster://``, ``redis+sentinel://``, a ``NATS_URL``
list), and a user name and password every parser reads the same way. A URL can also be
built from its parts (``DATABASE_HOST``, ...), and :func:`nats_credentials` takes the
credentials out of NATS URLs for nats-py. Every error is a ``ConfigError`` naming the
variable (or field) and never quoting a password.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit, urlunsplit

from wis2l_core._secrets import redact_url
from wis2l_core.errors import ConfigError

__all__ = [
    "PART_VARIABLES",
    "REDIS_CLUSTER_SCHEMES",
    "REDIS_SENTINEL_SCHEMES",
    "check_url",
    "database_url",
    "database_url_from_parts",
    "nats_credentials",
    "nats_urls",
    "nats_urls_from_parts",
    "redis_url",
    "redis_url_from_parts",
]

REDIS_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
"""``REDIS_URL`` schemes that name Redis Cluster seed nodes."""
REDIS_SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
"""``REDIS_URL`` schemes that name Sentinels and, as the path, the master's name."""

PART_VARIABLES = (
    "DATABASE_USER",
    "DATABASE_PASSWORD",
    "DATABASE_HOST",
    "DATABASE_PORT",
    "DATABASE_NAME",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "REDIS_DB",
    "NATS_HOST",
    "NATS_PORT",
)
"""The variables the ``*_from_parts`` functions read when the URL variable is unset."""


def database_url(url: str, variable: str) -> str:
    """``url`` if it is a PostgreSQL URL libpq reads as written, else ``ConfigError``."""
    _check_userinfo(url, variable)
    schemes = ("postgresql", "postgres")
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    checked = url
    if parts is not None:
        userinfo, at, hosts = parts.netloc.rpartition("@")
        if "," in hosts:  # libpq's multi-host form: host1:port1,host2:port2
            for host in hosts.split(","):
                check_url(
                    urlunsplit((parts.scheme, host, "", "", "")), variable, schemes, "PostgreSQL"
                )
            first = f"{userinfo}{at}{hosts.split(',')[0]}"
            checked = urlunsplit((parts.scheme, first, parts.path, parts.query, parts.fragment))
    check_url(checked, variable, schemes, "PostgreSQL")
    return url


def redis_url(url: str, variable: str) -> str:
    """``url`` if it is a Redis URL of one of the forms redis-py is built from (one
    server, Cluster seeds, Sentinels and a master name), else ``ConfigError``."""
    _check_userinfo(url, variable)
    scheme = url.partition("://")[0].lower()
    if scheme in REDIS_CLUSTER_SCHEMES or scheme in REDIS_SENTINEL_SCHEMES:
        _check_redis_hosts(url, variable, scheme)
        return url
    check_url(
        url,
        variable,
        ("redis", "rediss", "unix", *REDIS_CLUSTER_SCHEMES, *REDIS_SENTINEL_SCHEMES),
        "Redis",
    )
    parts = urlsplit(url)
    if parts.scheme != "unix":
        _check_redis_db(parts.path.lstrip("/"), variable)
    return url


def _check_redis_hosts(url: str, variable: str, scheme: str) -> None:
    """A cluster or Sentinel URL: ``scheme://[auth@]host:port[,host:port...][/path]``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(
            f"{variable} is not a valid Redis URL (bad host)", variable=variable
        ) from None
    hosts = parts.netloc.rpartition("@")[2]
    if not hosts:
        raise ConfigError(f"{variable} names no server: {redact_url(url)!r}", variable=variable)
    for host in hosts.split(","):
        check_url(f"redis://{host}", variable, ("redis",), "Redis")
    path = parts.path.strip("/")
    if scheme in REDIS_SENTINEL_SCHEMES:
        name = path.split("/")[0]
        if not name:
            raise ConfigError(
                f"{variable}: a Sentinel URL ends with the master's name, "
                f"e.g. redis+sentinel://host:26379/mymaster; got {redact_url(url)!r}",
                variable=variable,
            )
        db = path.split("/")[1] if "/" in path else ""
    else:
        db = path
    if scheme in REDIS_CLUSTER_SCHEMES and db not in ("", "0"):
        raise ConfigError(f"{variable}: Redis Cluster has only database 0", variable=variable)
    _check_redis_db(db, variable)


def _check_redis_db(db: str, variable: str) -> None:
    if db and not db.isdigit():
        raise ConfigError(
            f"{variable}: the database number must be an integer, got {db!r}",
            variable=variable,
        )


def nats_urls(raw: str, variable: str) -> tuple[str, ...]:
    """A comma-separated list of NATS servers (a bare ``host:port`` is ``nats://``), each
    checked, or ``ConfigError``."""
    pieces = [u.strip() for u in raw.split(",") if u.strip()]
    if not pieces:
        raise ConfigError(f"{variable} names no server", variable=variable)
    if any("@" in u and "://" not in u for u in pieces[1:]):
        # "nats://u:p,w@h" split in the password: refuse rather than guess.
        raise ConfigError(_reserved(variable, extra=", and ',' in a list"), variable=variable)
    urls = tuple(u if "://" in u else f"nats://{u}" for u in pieces)
    for url in urls:
        check_nats_url(url, variable)
    return urls


def check_nats_url(url: str, variable: str) -> None:
    """Refuse a NATS URL nats-py would not read as written."""
    _check_userinfo(url, variable)
    check_url(url, variable, ("nats", "tls", "ws", "wss"), "NATS")


def database_url_from_parts(env: Mapping[str, str]) -> str:
    """The PostgreSQL URL ``DATABASE_USER``, ``_PASSWORD``, ``_HOST``, ``_PORT`` and
    ``_NAME`` name (``env``: values stripped, blanks left out), credentials encoded."""
    user = env.get("DATABASE_USER")
    password = env.get("DATABASE_PASSWORD")
    host = _host(env.get("DATABASE_HOST", "localhost"), "DATABASE_HOST")
    port = _port(env.get("DATABASE_PORT", "5432"), "DATABASE_PORT")
    name = env.get("DATABASE_NAME", "wis2l")
    if password is not None and user is None:
        raise ConfigError(
            "DATABASE_PASSWORD is set but DATABASE_USER is not", variable="DATABASE_USER"
        )
    _no_nul(env, "DATABASE_USER", "DATABASE_PASSWORD")
    auth = ""
    if user is not None:
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        auth += "@"
    return f"postgresql://{auth}{host}:{port}/{quote(name, safe='')}"


def _no_nul(env: Mapping[str, str], *variables: str) -> None:
    """Refuse a credential holding a NUL, which no server can compare (never echoed)."""
    for variable in variables:
        if "\x00" in env.get(variable, ""):
            raise ConfigError(f"{variable} holds a NUL character", variable=variable)


def redis_url_from_parts(env: Mapping[str, str]) -> str:
    """The Redis URL ``REDIS_HOST``, ``_PORT``, ``_PASSWORD`` and ``_DB`` name."""
    host = _host(env.get("REDIS_HOST", "localhost"), "REDIS_HOST")
    port = _port(env.get("REDIS_PORT", "6379"), "REDIS_PORT")
    db = env.get("REDIS_DB", "0")
    if not db.isdigit():
        raise ConfigError(f"REDIS_DB must be an integer >= 0, not {db!r}", variable="REDIS_DB")
    password = env.get("REDIS_PASSWORD")
    _no_nul(env, "REDIS_PASSWORD")
    auth = f":{quote(password, safe='')}@" if password is not None else ""
    return f"redis://{auth}{host}:{port}/{int(db)}"


def nats_urls_from_parts(env: Mapping[str, str]) -> tuple[str, ...]:
    """The one NATS server ``NATS_HOST`` and ``NATS_PORT`` name."""
    host = _host(env.get("NATS_HOST", "localhost"), "NATS_HOST")
    port = _port(env.get("NATS_PORT", "4222"), "NATS_PORT")
    return (f"nats://{host}:{port}",)


def _host(host: str, variable: str) -> str:
    """``host`` ready for a URL's authority (IPv6 in brackets), or ``ConfigError``."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not bare or any(c in _NOT_IN_HOST or c.isspace() or not c.isprintable() for c in bare):
        raise ConfigError(f"{variable} is not a host name: {host!r}", variable=variable)
    if ":" in bare:
        if any(c not in _IPV6 for c in bare):
            raise ConfigError(f"{variable} is not a host name: {host!r}", variable=variable)
        return f"[{bare}]"
    return bare


_NOT_IN_HOST = frozenset("/\\@?#[]'\"")
_IPV6 = frozenset("0123456789abcdefABCDEF:.%")


def _port(raw: str, variable: str) -> int:
    # int() also takes "+5", "5_0" and non-ASCII digits; a port should not.
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 65535):
        raise ConfigError(
            f"{variable} must be a port number (1-65535), not {raw!r}", variable=variable
        )
    return int(raw)


_USERINFO = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|%[0-9A-Fa-f]{2}|[^\x00-\x7f\s])*")
"""What a URL's ``user:password`` may hold as written (RFC 3986 userinfo, and non-ASCII
letters): every other character must be percent-encoded."""


def _reserved(variable: str, extra: str = "") -> str:
    return (
        f"{variable}: the user name or password is not percent-encoded: percent-encode "
        f"reserved characters in the password (/ ? # @ [ ] % and blanks{extra}), e.g. with "
        "urllib.parse.quote(password, safe=''); an '@' anywhere else in the URL is %40"
    )


def _check_userinfo(url: str, variable: str) -> None:
    """Refuse a URL whose user name or password a parser would read another way.

    libpq ends the password at the first ``/`` (``?``, ``#`` elsewhere) or ``@``, Python at
    the last ``@``: a password holding one of them was read as a host, a port or a path,
    and came back in error messages. So the text before a URL's ``@`` must be a
    well-formed userinfo, and there may be only one ``@``. The message never quotes the
    URL: it holds the password.
    """
    rest = url.partition("://")[2] if "://" in url else url
    userinfo, at, after = rest.partition("@")
    if at and ("@" in after or _USERINFO.fullmatch(userinfo) is None):
        raise ConfigError(_reserved(variable), variable=variable)
    if at and "%" in userinfo:
        # libpq refuses %00 and passes other bytes on as they are; PostgreSQL, Redis and
        # NATS compare text: a NUL or bytes that are not UTF-8 can match no password.
        decoded = unquote_to_bytes(userinfo)
        try:
            bad = "\x00" in decoded.decode()
        except UnicodeDecodeError:
            bad = True
        if bad:
            raise ConfigError(
                f"{variable}: the user name or password percent-decodes to a NUL or to "
                "bytes that are not UTF-8; percent-encode the password's UTF-8 text, e.g. "
                "with urllib.parse.quote(password, safe='')",
                variable=variable,
            )


def check_url(url: str, variable: str, schemes: tuple[str, ...], what: str) -> None:
    """Refuse ``url`` unless Python parses it, its scheme is one of ``schemes`` and its
    port (if any) is 1-65535; ``what`` names the kind of URL in the message."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        # Python's text quotes the port as written: never echo it (nor the URL), it may
        # be part of a password cut by an unencoded character.
        problem = "the port must be a number 1-65535" if "Port" in str(exc) else "bad host"
        raise ConfigError(
            f"{variable} is not a valid {what} URL ({problem}); if the password holds "
            "reserved characters, percent-encode them",
            variable=variable,
        ) from None
    if parts.scheme not in schemes:
        raise ConfigError(
            f"{variable} must start with {' or '.join(s + '://' for s in schemes)}, "
            f"got {redact_url(url)!r}",
            variable=variable,
        )
    if port == 0:
        raise ConfigError(f"{variable} has port 0", variable=variable)


def nats_credentials(urls: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """NATS servers for nats-py, and their credentials percent-decoded.

    nats-py reads a URL's user, password or token as written, so a percent-encoded
    password would reach the server encoded. When the servers share one set of
    credentials (the usual case), they are taken out of the URLs and returned decoded, as
    ``connect()``'s ``user``/``password`` or ``token`` (which also serve the servers the
    cluster announces). Servers with different credentials are left as written.

    Args:
        urls: ``Settings.nats_urls``.

    Returns:
        The server URLs, and the keyword arguments to add to ``connect()``.
    """
    urls = list(urls)
    found: set[str] = set()
    bare = []
    for url in urls:
        parts = urlsplit(url)
        userinfo, at, host = parts.netloc.rpartition("@")
        if at:
            found.add(userinfo)
        bare.append(urlunsplit(parts._replace(netloc=host)))
    if len(found) != 1:
        return urls, {}
    user, colon, password = found.pop().partition(":")
    if colon:
        return bare, {"user": unquote(user), "password": unquote(password)}
    return bare, {"token": unquote(user)}
