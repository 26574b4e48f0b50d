"""Token verification's span and metric: ``auth.verify`` and ``wis2l.auth.verifications``.

:meth:`wis2l_core.auth.verify.TokenVerifier.verify` hands itself to :func:`observed_verify`
when an SDK records (:func:`observing`). The span carries the outcome
(``wis2l.auth.outcome``: ``valid``, or the refusal's
:attr:`~wis2l_core.errors.Unauthenticated.reason`, or ``issuer_unavailable``) and the
issuer the verifier trusts (``wis2l.auth.issuer``, public configuration). Never the
token, and never a claim: not the subject, not the token's own ``iss``.

A refused token is the verification doing its job, like an HTTP 401: the span's status
stays unset. An issuer that cannot be reached (``ServiceUnavailable``) or an unexpected
error marks it failed (``error.type``).

This module imports nothing from :mod:`wis2l_core.auth` (the verifier imports it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from wis2l_core.errors import ServiceUnavailable, Unauthenticated
from wis2l_core.telemetry._core import Instruments, record_error, tracer

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Meter

__all__ = ["OUTCOMES", "observed_verify", "observing"]

OUTCOMES = (
    "valid",
    "malformed",
    "algorithm_refused",
    "wrong_issuer",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_audience",
    "missing_claim",
    "invalid_claim",
    "issuer_unavailable",
    "error",
)
"""The values of ``wis2l.auth.outcome``."""


def _verifications(m: Meter) -> Counter:
    return m.create_counter(
        "wis2l.auth.verifications",
        unit="{verification}",
        description="Token verifications, by outcome.",
    )


_VERIFICATIONS: Instruments[Counter] = Instruments(_verifications)


def observing() -> bool:
    """True when a span or a measurement of a verification would be recorded."""
    return tracer() is not None or _VERIFICATIONS.get() is not None


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, Unauthenticated):
        return exc.reason or "invalid_claim"
    if isinstance(exc, ServiceUnavailable):
        return "issuer_unavailable"
    return "error"


async def observed_verify(
    issuer: str, verify: Callable[[str], Awaitable[dict[str, Any]]], token: str
) -> dict[str, Any]:
    """``verify(token)`` inside an ``auth.verify`` span, counted by outcome.

    Args:
        issuer: the issuer the verifier trusts (configuration, not the token's claim).
        verify: the verifier's plain verification.
        token: the token (passed on, never recorded).
    """
    t = tracer()
    if t is None:
        try:
            claims = await verify(token)
        except Exception as exc:
            _count(_outcome(exc))
            raise
        _count("valid")
        return claims
    with t.start_as_current_span(
        "auth.verify",
        attributes={"wis2l.auth.issuer": issuer},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            claims = await verify(token)
        except BaseException as exc:
            outcome = _outcome(exc)
            span.set_attribute("wis2l.auth.outcome", outcome)
            if not isinstance(exc, Unauthenticated):
                record_error(span, exc)
            if isinstance(exc, Exception):
                _count(outcome)
            raise
        span.set_attribute("wis2l.auth.outcome", "valid")
        _count("valid")
        return claims


def _count(outcome: str) -> None:
    if (counter := _VERIFICATIONS.get()) is not None:
        counter.add(1, {"wis2l.auth.outcome": outcome})
