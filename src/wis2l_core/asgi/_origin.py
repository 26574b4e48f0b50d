"""The one CSRF rule for writes a browser makes with ambient credentials (I/O-free).

A browser attaches cookies (and the studio's loopback trust) to a request another site's
page makes, so such a write must show where it came from. Both users apply the same rule:
``AuthMiddleware`` to cookie-authenticated writes (against the request's own origin) and
the studio to its forms (against the addresses it is served on). The rule, first header
present wins:

1. ``Origin`` must be one of the allowed origins (``null`` never is);
2. else ``Sec-Fetch-Site`` must be ``same-origin`` or ``none`` (typed by the user);
3. else ``Referer`` must be on an allowed origin;
4. else the request is refused: a browser sends at least one of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["origin_of", "same_origin"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SITES = frozenset({"same-origin", "none"})


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of ``url``, lower-cased, without the scheme's default port;
    ``None`` when ``url`` has no scheme or host (``null``, a path, garbage)."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, an unbalanced bracket
        return None
    scheme = parts.scheme.lower()
    if not scheme or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def same_origin(
    allowed: Iterable[str],
    *,
    origin: str | None,
    fetch_site: str | None,
    referer: str | None,
) -> bool:
    """Whether a write with these headers comes from one of the ``allowed`` origins.

    Args:
        allowed: origins (``http://127.0.0.1:5555``), compared after :func:`origin_of`.
        origin: the ``Origin`` header, or ``None``.
        fetch_site: the ``Sec-Fetch-Site`` header, or ``None``.
        referer: the ``Referer`` header, or ``None``.

    Returns:
        True only when the first of the headers present vouches for an allowed origin
        (see the module's docstring); False when none is present.
    """
    if origin:
        return _within(origin, allowed)
    if fetch_site:
        return fetch_site.strip().lower() in _SITES
    if referer:
        return _within(referer, allowed)
    return False


def _within(url: str, allowed: Iterable[str]) -> bool:
    found = origin_of(url)
    return found is not None and any(found == origin_of(a) for a in allowed)
