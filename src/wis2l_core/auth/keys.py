"""``IssuerKeys``: an OpenID Connect issuer's signing keys, fetched and cached safely.

Discovery (``<issuer>/.well-known/openid-configuration``) names the ``jwks_uri``; the
JWKS there holds the public keys. The rules, each one a defence:

- **https only**, except a loopback ``http`` issuer when the app runs in development;
  the ``jwks_uri`` obeys the same rule, and discovery must name exactly our issuer.
- **Short timeout, no redirects, a size cap** on each document.
- **One fetch in flight**: however many requests wait for keys, one HTTP fetch serves
  them all (single-flight).
- **Cached for a TTL** taken from ``Cache-Control: max-age``, clamped to
  [``min_ttl``, ``max_ttl``].
- **Unknown ``kid``**: a refetch at most once per ``cooldown``; a flood of tokens naming
  random ``kid``s cannot become a flood of fetches.
- **Stale keys**: when a refresh fails, the keys held keep working for ``stale_for``
  seconds past their TTL; with no usable keys the issuer is ``ServiceUnavailable``
  (``service="oidc"``), never ``Unauthenticated``: an outage must not look like a bad token.
  After a failed fetch the next waits ``retry_after`` seconds, so an outage costs one
  fetch per ``retry_after``, not one per request.
- **Key choice**: by ``kid``; the key's type (and curve, and ``alg`` when it names one)
  must match the token's algorithm; keys with ``use`` other than ``sig`` are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import ssl
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx
import orjson
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, KeySet, OKPKey, RSAKey

from wis2l_core._net import is_loopback
from wis2l_core.errors import ConfigError, ServiceUnavailable, Unauthenticated

__all__ = ["IssuerKeys", "check_issuer_url", "key_matches"]

log = logging.getLogger("wis2l_core.auth")

SERVICE = "oidc"
"""The ``service`` of the ``ServiceUnavailable`` an unreachable issuer raises."""
MAX_DOCUMENT = 256 * 1024
"""Bytes at most in a discovery document or a JWKS."""

_KTY = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_CURVE = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521", "ES256K": "secp256k1"}
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
_NO_STORE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\b", re.IGNORECASE)


def check_issuer_url(url: str, *, development: bool, what: str = "issuer") -> None:
    """Refuse a URL the keys may not come from: not https, unless it is a loopback http
    URL and ``development`` is true.

    Raises:
        ConfigError: the URL is refused.
    """
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        if development:
            return
        raise ConfigError(
            f"{what} {url!r}: plain http is allowed only for a loopback issuer in "
            "development (WIS2L_ENV=development)",
            variable="oidc_issuer",
        )
    raise ConfigError(f"{what} {url!r} must be an https URL", variable="oidc_issuer")


def key_matches(key: Key, alg: str) -> bool:
    """True if ``key`` may verify a token signed with ``alg``."""
    if key.get("use") not in (None, "sig"):
        return False
    if key.get("alg") not in (None, alg):
        return False
    kty = _KTY.get(alg[:2])
    if kty is None or key.key_type != kty:
        return False
    if kty == "EC":
        return key.get("crv") == _CURVE.get(alg)
    if kty == "OKP":  # "EdDSA" names either curve; RFC 9864's "Ed25519"/"Ed448" one
        return key.get("crv") in (("Ed25519", "Ed448") if alg == "EdDSA" else (alg,))
    return True


@attrs.frozen
class _Held:
    by_kid: Mapping[str, Key]
    unnamed: tuple[Key, ...]
    fresh_until: float
    usable_until: float
    fits: dict[tuple[str | None, str], Key] = attrs.field(factory=dict)
    """(kid, alg) -> key, for the pairs already looked up and found (the warm path)."""


@attrs.define(eq=False)
class IssuerKeys:
    """The signing keys of one issuer, fetched lazily and cached (see the module doc).

    No I/O happens until the first :meth:`get`. Each fetch opens and closes its own HTTP
    client, so nothing is held open between fetches and no close is needed;
    :meth:`aclose` only cancels a fetch in flight.

    Args:
        issuer: the issuer URL (as in the tokens' ``iss``).
        development: allow a loopback ``http`` issuer.
        timeout: seconds for each fetch (connect, read, everything).
        default_ttl: seconds keys are fresh when the JWKS sends no ``max-age``.
        min_ttl: the least ``max-age`` honoured.
        max_ttl: the most ``max-age`` honoured.
        cooldown: seconds between refetches caused by an unknown ``kid``.
        stale_for: seconds past their TTL that held keys still serve while the issuer
            cannot be reached.
        retry_after: seconds after a failed fetch before the next is tried; meanwhile
            the held keys serve (within ``stale_for``) or the call is
            ``ServiceUnavailable`` at once.
        transport: an ``httpx`` transport (tests).
    """

    issuer: str
    development: bool = attrs.field(default=False, kw_only=True)
    timeout: float = attrs.field(default=3.0, kw_only=True)
    default_ttl: float = attrs.field(default=300.0, kw_only=True)
    min_ttl: float = attrs.field(default=60.0, kw_only=True)
    max_ttl: float = attrs.field(default=86400.0, kw_only=True)
    cooldown: float = attrs.field(default=30.0, kw_only=True)
    stale_for: float = attrs.field(default=3600.0, kw_only=True)
    retry_after: float = attrs.field(default=2.0, kw_only=True)
    transport: httpx.AsyncBaseTransport | None = attrs.field(default=None, kw_only=True)
    fetches: int = attrs.field(default=0, init=False)
    """How many times the JWKS was fetched (successful or not)."""
    _held: _Held | None = attrs.field(default=None, init=False)
    _jwks_uri: str | None = attrs.field(default=None, init=False)
    _inflight: asyncio.Task[_Held] | None = attrs.field(default=None, init=False)
    _last_fetch: float = attrs.field(default=float("-inf"), init=False)
    _failed_at: float = attrs.field(default=float("-inf"), init=False)

    def __attrs_post_init__(self) -> None:
        check_issuer_url(self.issuer, development=self.development)

    def cached(self, kid: str | None, alg: str) -> Key | None:
        """The key for ``kid``/``alg`` if fresh keys hold it (no I/O): the fast path."""
        held = self._held
        if held is None or time.monotonic() >= held.fresh_until:
            return None
        return _pick(held, kid, alg)

    async def get(self, kid: str | None, alg: str) -> Key:
        """The key that verifies a token with this ``kid`` and ``alg``.

        Raises:
            Unauthenticated: no key of the issuer has this ``kid`` (after at most one
                refetch per cooldown), or it does not fit ``alg``.
            ServiceUnavailable: the issuer cannot be reached and no usable keys are held.
        """
        key = self.cached(kid, alg)
        if key is not None:
            return key
        now = time.monotonic()
        held = self._held
        if held is None or now >= held.fresh_until:
            held = await self._refresh(required=held is None or now >= held.usable_until)
        key = _pick(held, kid, alg)
        if key is None and time.monotonic() - self._last_fetch >= self.cooldown:
            held = await self._refresh(required=False)
            key = _pick(held, kid, alg)
        if key is None:
            raise Unauthenticated(
                f"no signing key of the issuer fits kid={kid!r}, alg={alg}", reason="unknown_key"
            )
        return key

    async def refresh(self) -> None:
        """Fetch the keys now (single-flight with any fetch already running).

        Raises:
            ServiceUnavailable: the fetch failed (held keys are kept).
        """
        await self._refresh(required=True)

    async def aclose(self) -> None:
        """Cancel a fetch in flight (idempotent). Nothing else stays open: each fetch
        opens and closes its own HTTP client."""
        task, self._inflight = self._inflight, None
        if task is not None and not task.done():
            task.cancel()
            if task.get_loop() is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError, ServiceUnavailable):
                    await task

    async def _refresh(self, *, required: bool) -> _Held:
        """Refetch (joining a fetch in flight). On failure return the held keys, unless
        ``required`` (none held, or past their stale bound): then ServiceUnavailable."""
        task = self._inflight
        if task is None or task.done():
            now = time.monotonic()
            if now - self._failed_at < self.retry_after:
                # the last fetch failed a moment ago: no new one yet (an outage must not
                # turn every request into a fetch); the held keys serve if they still may
                held = self._held
                if required or held is None or now >= held.usable_until:
                    raise ServiceUnavailable(
                        f"the issuer {self.issuer} could not be reached; retrying in "
                        f"{self.retry_after - (now - self._failed_at):.1f} s",
                        service=SERVICE,
                    )
                return held
            self._last_fetch = now
            task = asyncio.get_running_loop().create_task(self._fetch())
            task.add_done_callback(_retrieve)
            self._inflight = task
        try:
            return await asyncio.shield(task)
        except ServiceUnavailable:
            held = self._held
            if required or held is None or time.monotonic() >= held.usable_until:
                raise
            return held

    async def _fetch(self) -> _Held:
        self.fetches += 1
        # A client per fetch: fetches are minutes apart, so nothing stays open between
        # them (no close to forget, no client tied to an event loop that has ended).
        client = httpx.AsyncClient(
            verify=_ssl_context(),
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            trust_env=not is_loopback(urlsplit(self.issuer).hostname or ""),
            transport=self.transport,
            headers={"Accept": "application/json"},
        )
        try:
            async with client:
                if self._jwks_uri is None:
                    discovery, _ = await self._document(
                        client, self.issuer.rstrip("/") + "/.well-known/openid-configuration"
                    )
                    self._jwks_uri = _jwks_uri(discovery, self.issuer, self.development)
                jwks, ttl = await self._document(client, self._jwks_uri)
            held = _parse(jwks, ttl, self.stale_for)
        except ServiceUnavailable as exc:
            self._failed_at = time.monotonic()
            self._jwks_uri = None  # read discovery again next time
            log.warning("OIDC keys: %s", exc, extra={"issuer": self.issuer})
            raise
        self._held = held
        log.debug("OIDC keys fetched", extra={"issuer": self.issuer, "keys": len(held.by_kid)})
        return held

    async def _document(self, client: httpx.AsyncClient, url: str) -> tuple[Any, float]:
        try:
            async with asyncio.timeout(self.timeout):
                async with client.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise ServiceUnavailable(
                            f"{url} answered {response.status_code}", service=SERVICE
                        )
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_DOCUMENT:
                            raise ServiceUnavailable(
                                f"{url} is larger than {MAX_DOCUMENT} bytes", service=SERVICE
                            )
                    ttl = self._ttl(response.headers.get("cache-control", ""))
                    return _loads(bytes(body), url), ttl
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            raise ServiceUnavailable(
                f"cannot fetch {url}: {type(exc).__name__}: {exc}", service=SERVICE
            ) from exc

    def _ttl(self, cache_control: str) -> float:
        if _NO_STORE.search(cache_control):
            return self.min_ttl
        match = _MAX_AGE.search(cache_control)
        ttl = float(match.group(1)) if match else self.default_ttl
        return min(max(ttl, self.min_ttl), self.max_ttl)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """The TLS context of the fetches, made once (loading the CA bundle is the slow part
    of making an HTTP client)."""
    return httpx.create_ssl_context()  # as httpx's default: certifi, or SSL_CERT_FILE/DIR


def _retrieve(task: asyncio.Task[_Held]) -> None:
    # the waiters may all have been cancelled; the outcome is still read, never lost
    if not task.cancelled():
        task.exception()


def _loads(body: bytes, url: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ServiceUnavailable(f"{url} is not JSON", service=SERVICE) from exc


def _jwks_uri(discovery: Any, issuer: str, development: bool) -> str:
    if not isinstance(discovery, dict):
        raise ServiceUnavailable("the discovery document is not an object", service=SERVICE)
    if discovery.get("issuer") != issuer:
        raise ServiceUnavailable(
            f"discovery names issuer {discovery.get('issuer')!r}, not {issuer!r}",
            service=SERVICE,
        )
    uri = discovery.get("jwks_uri")
    if not isinstance(uri, str):
        raise ServiceUnavailable("the discovery document has no jwks_uri", service=SERVICE)
    try:
        check_issuer_url(uri, development=development, what="jwks_uri")
    except ConfigError as exc:
        raise ServiceUnavailable(str(exc), service=SERVICE) from exc
    return uri


def _parse(jwks: Any, ttl: float, stale_for: float) -> _Held:
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ServiceUnavailable("the JWKS has no 'keys' list", service=SERVICE)
    by_kid: dict[str, Key] = {}
    unnamed: list[Key] = []
    for raw in jwks["keys"]:
        if not isinstance(raw, dict) or raw.get("kty") not in ("RSA", "EC", "OKP"):
            continue  # unknown or symmetric key types are never used
        if any(p in raw for p in ("d", "p", "q", "k")):
            continue  # a private or secret key published by mistake: do not use it
        try:
            key = KeySet.import_key_set({"keys": [raw]}).keys[0]
        except (JoseError, ValueError, TypeError) as exc:
            log.warning("OIDC keys: skipped a malformed key: %s", exc)
            continue
        if not isinstance(key, RSAKey | ECKey | OKPKey):
            continue
        kid = raw.get("kid")
        if isinstance(kid, str):
            by_kid[kid] = key
        else:
            unnamed.append(key)
    if not by_kid and not unnamed:
        raise ServiceUnavailable("the JWKS holds no usable signing key", service=SERVICE)
    now = time.monotonic()
    return _Held(by_kid, tuple(unnamed), now + ttl, now + ttl + stale_for)


def _pick(held: _Held, kid: str | None, alg: str) -> Key | None:
    found = held.fits.get((kid, alg))
    if found is None:
        found = _choose(held, kid, alg)
        if found is not None:
            held.fits[(kid, alg)] = found  # at most (keys x algorithms) entries
    return found


def _choose(held: _Held, kid: str | None, alg: str) -> Key | None:
    if kid is not None:
        key = held.by_kid.get(kid)
        return key if key is not None and key_matches(key, alg) else None
    fits = [k for k in (*held.by_kid.values(), *held.unnamed) if key_matches(k, alg)]
    return fits[0] if len(fits) == 1 else None
