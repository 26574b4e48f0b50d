"""``TokenVerifier``: checks a JWT from the issuer and returns its claims.

What is checked, in this order (cheap refusals first, crypto last):

1. Shape: a string of at most ``MAX_TOKEN_BYTES`` (16 KiB), three base64url parts, a
   JSON object header. A JWE (five parts) is refused.
2. Header: ``alg`` among the allowed algorithms (``none`` and ``HS*`` are never allowed,
   whatever the settings say), no ``crit`` (no extension is understood here, so any
   critical one is refused, RFC 7515 4.1.11).
3. Issuer, when no cached key fits: the (not yet verified) payload's ``iss`` must be
   ours, so a token of another issuer is refused with a message naming both before the
   issuer is asked for a key (and not as an unknown key).
4. Key: by ``kid`` from :class:`~wis2l_core.auth.keys.IssuerKeys`, of the ``alg``'s type.
5. Signature (joserfc, with only the header's ``alg`` allowed).
6. Claims: ``iss`` exactly ours (named as in step 3), ``aud`` ours or a list containing
   it, ``exp`` required, ``exp``/``nbf``/``iat`` within the leeway, ``sub`` a non-empty
   string.

Every refusal is :class:`~wis2l_core.errors.Unauthenticated` (``code="invalid_token"``);
an unreachable issuer with no usable keys is ``ServiceUnavailable``.
"""

from __future__ import annotations

import binascii
import warnings
from base64 import urlsafe_b64decode
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import (
    DecodeError,
    ExpiredTokenError,
    InvalidPayloadError,
    JoseError,
    MissingAlgorithmError,
    MissingClaimError,
    SecurityWarning,
    UnsupportedAlgorithmError,
)
from joserfc.jwt import JWTClaimsRegistry

from wis2l_core.auth.keys import IssuerKeys
from wis2l_core.errors import Unauthenticated
from wis2l_core.telemetry import _identity as telemetry

__all__ = ["MAX_TOKEN_BYTES", "TokenVerifier"]

MAX_TOKEN_BYTES = 16 * 1024
"""A longer token is refused before it is parsed."""

_HEADER_MEMO = 64
"""Distinct token headers remembered (then the memo starts again)."""
_NEVER = frozenset({"none", "HS256", "HS384", "HS512"})
MALFORMED = "malformed"


def _signature_reason(exc: JoseError) -> str:
    """``Unauthenticated.reason`` of a token joserfc would not decode or verify."""
    if isinstance(exc, DecodeError | InvalidPayloadError):
        return MALFORMED
    if isinstance(exc, UnsupportedAlgorithmError | MissingAlgorithmError):
        return "algorithm_refused"
    return "bad_signature"


def _claim_reason(exc: JoseError) -> str:
    """``Unauthenticated.reason`` of a claim the registry refused."""
    claim = getattr(exc, "claim", None)
    return {
        "aud": "wrong_audience",
        "iss": "wrong_issuer",
        "nbf": "not_yet_valid",
        "iat": "not_yet_valid",
    }.get(claim if isinstance(claim, str) else "", "invalid_claim")


def _b64json(part: str, what: str) -> Any:
    try:
        raw = urlsafe_b64decode(part + "=" * (-len(part) % 4))
        return orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise Unauthenticated(
            f"malformed token: the {what} is not base64url JSON", reason=MALFORMED
        ) from exc


def read_header(token: object) -> dict[str, Any]:
    """The header of ``token`` after the checks that need no key (steps 1 and 2 above,
    except the algorithm list).

    Raises:
        Unauthenticated: not a compact JWS of acceptable size and shape.
    """
    if not isinstance(token, str) or not token:
        raise Unauthenticated("malformed token: not a string", reason=MALFORMED)
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthenticated(f"token larger than {MAX_TOKEN_BYTES} bytes", reason=MALFORMED)
    parts = token.split(".")
    if len(parts) != 3:
        raise Unauthenticated(
            "malformed token: not a signed JWT (header.payload.signature)", reason=MALFORMED
        )
    header = _b64json(parts[0], "header")
    if not isinstance(header, dict):
        raise Unauthenticated("malformed token: the header is not a JSON object", reason=MALFORMED)
    if "crit" in header:
        raise Unauthenticated(
            f"token header marks {header['crit']!r} critical: not understood", reason=MALFORMED
        )
    return header


class TokenVerifier:
    """Verifies tokens of one issuer for one audience.

    Args:
        keys: the issuer's key set.
        audience: the ``aud`` value a token must carry.
        algorithms: the accepted ``alg`` values (``none`` and ``HS*`` are dropped).
        leeway: seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``.
    """

    def __init__(
        self,
        keys: IssuerKeys,
        *,
        audience: str,
        algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA", "PS256"),
        leeway: float = 60.0,
    ) -> None:
        self.keys = keys
        self.issuer = keys.issuer
        self.audience = audience
        self.algorithms = frozenset(a for a in algorithms if a not in _NEVER)
        self.leeway = int(leeway)
        self._headers: dict[str, tuple[str, str | None]] = {}
        self._registry = JWTClaimsRegistry(
            leeway=self.leeway,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": audience},
            sub={"essential": True},
            exp={"essential": True},
        )

    async def verify(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``.

        Raises:
            Unauthenticated: the token is refused (the message says why).
            ServiceUnavailable: the issuer's keys cannot be had.
        """
        if telemetry.observing():  # an SDK records: the auth.verify span and the count
            return await telemetry.observed_verify(self.issuer, self._verify, token)
        return await self._verify(token)

    async def _verify(self, token: str) -> dict[str, Any]:
        """:meth:`verify` without telemetry."""
        head = token.partition(".")[0] if isinstance(token, str) else ""
        seen = self._headers.get(head)
        if seen is None or len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            seen = self._header(token)
        alg, kid = seen
        key = self.keys.cached(kid, alg)
        if key is None:  # before asking the issuer for a key (a cached key: step 6 names it)
            payload = _b64json(token.split(".", 2)[1], "payload")
            self._check_issuer(payload.get("iss") if isinstance(payload, dict) else None)
            key = await self.keys.get(kid, alg)
        return self.check(token, key, alg)

    def _check_issuer(self, issuer: object) -> None:
        """Refuse a token whose ``iss`` is not ours, naming both (the expected issuer is
        public; the token's is the caller's own claim)."""
        if issuer != self.issuer:
            shown = repr(issuer)[:200]
            raise Unauthenticated(
                f"token issuer {shown} is not the expected issuer {self.issuer!r}",
                reason="wrong_issuer",
            )

    def _header(self, token: str) -> tuple[str, str | None]:
        """``(alg, kid)`` of an acceptable header; remembered by its encoded form, since
        an issuer's tokens share a handful of headers (a bounded memo)."""
        header = read_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise Unauthenticated(
                f"token algorithm {alg!r} is not accepted", reason="algorithm_refused"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("malformed token: kid is not a string", reason=MALFORMED)
        if len(self._headers) >= _HEADER_MEMO:
            self._headers.clear()
        self._headers[token.partition(".")[0]] = (alg, kid)
        return alg, kid

    def check(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        """Steps 4 and 5 with a chosen key (no I/O)."""
        try:
            if alg == "EdDSA":  # RFC 9864 deprecates the name (for "Ed25519"), not the check
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", SecurityWarning)
                    claims = jwt.decode(token, key, algorithms=[alg]).claims
            else:
                claims = jwt.decode(token, key, algorithms=[alg]).claims
        except JoseError as exc:
            raise Unauthenticated(
                f"token refused: {exc.error}: {exc.description}", reason=_signature_reason(exc)
            ) from exc
        self._check_issuer(claims.get("iss"))
        try:
            self._registry.validate(claims)
        except ExpiredTokenError as exc:
            raise Unauthenticated("token expired", reason="expired") from exc
        except MissingClaimError as exc:
            raise Unauthenticated(
                f"token lacks a required claim: {exc.description}", reason="missing_claim"
            ) from exc
        except JoseError as exc:
            raise Unauthenticated(
                f"token refused: {exc.description}", reason=_claim_reason(exc)
            ) from exc
        if not claims["sub"]:
            raise Unauthenticated("token has an empty sub", reason="invalid_claim")
        return claims
