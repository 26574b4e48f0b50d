"""The ``auth.verify`` span and ``wis2l.auth.verifications``, with tokens of the dev issuer
over real sockets: one outcome per refusal, never the token or a claim."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from wis2l_core.auth.keys import IssuerKeys
from wis2l_core.auth.verify import TokenVerifier
from wis2l_core.dev.issuer import DevIssuer
from wis2l_core.errors import ServiceUnavailable, Unauthenticated
from wis2l_core.telemetry import _identity
from wis2l_core.telemetry._core import Instruments
from wis2l_core.testing.telemetry import Captured


@pytest.fixture(scope="module")
def issuer() -> Iterator[DevIssuer]:
    with DevIssuer() as dev:
        yield dev


@pytest.fixture(scope="module")
def verifier(issuer: DevIssuer) -> TokenVerifier:
    verifier = TokenVerifier(IssuerKeys(issuer.issuer, development=True), audience=issuer.audience)

    async def fetch() -> None:
        await verifier.keys.refresh()
        await verifier.keys.aclose()

    asyncio.run(fetch())
    return verifier


def by_outcome(captured: Captured) -> dict[str, int]:
    return {
        p.attributes["wis2l.auth.outcome"]: p.value
        for p in captured.points("wis2l.auth.verifications")
    }


async def test_a_valid_token_is_one_span_with_the_issuer_and_nothing_of_the_token(
    issuer: DevIssuer, verifier: TokenVerifier, wis2l_telemetry: Captured
) -> None:
    token = issuer.mint(sub="user-42", email="secret@example.io")
    claims = await verifier.verify(token)
    span = wis2l_telemetry.span("auth.verify")
    assert dict(span.attributes or {}) == {
        "wis2l.auth.issuer": issuer.issuer,
        "wis2l.auth.outcome": "valid",
    }
    assert span.status.status_code is StatusCode.UNSET
    shown = repr(span.to_json())
    for secret in (token, token.split(".")[2], claims["sub"], claims["email"]):
        assert secret not in shown
    assert by_outcome(wis2l_telemetry) == {"valid": 1}


@pytest.mark.parametrize(
    ("make", "outcome"),
    [
        ("alg_none", "algorithm_refused"),
        ("tampered", "bad_signature"),
        ("foreign_key", "bad_signature"),
        ("expired", "expired"),
        ("not_yet_valid", "not_yet_valid"),
        ("wrong_issuer", "wrong_issuer"),
        ("wrong_audience", "wrong_audience"),
        ("oversized", "malformed"),
        ("unknown_crit", "malformed"),
        ("random_kid", "unknown_key"),
    ],
)
async def test_each_refusal_has_its_outcome(
    issuer: DevIssuer,
    verifier: TokenVerifier,
    wis2l_telemetry: Captured,
    make: str,
    outcome: str,
) -> None:
    with pytest.raises(Unauthenticated) as refused:
        await verifier.verify(getattr(issuer, make)())
    assert refused.value.reason == outcome
    span = wis2l_telemetry.span("auth.verify")
    assert (span.attributes or {})["wis2l.auth.outcome"] == outcome
    assert span.status.status_code is StatusCode.UNSET  # a 401, not a failure
    assert "https://evil.example" not in repr(span.to_json())  # the token's own iss
    assert by_outcome(wis2l_telemetry) == {outcome: 1}


async def test_claims_refused_by_the_registry(
    issuer: DevIssuer, verifier: TokenVerifier, wis2l_telemetry: Captured
) -> None:
    for token, outcome in [
        (issuer.mint(sub="u", exp=None), "missing_claim"),
        (issuer.mint(sub=""), "invalid_claim"),
        ("a.b", "malformed"),
        ("", "malformed"),
    ]:
        with pytest.raises(Unauthenticated) as refused:
            await verifier.verify(token)
        assert refused.value.reason == outcome
    assert by_outcome(wis2l_telemetry) == {"missing_claim": 1, "invalid_claim": 1, "malformed": 2}


async def test_an_issuer_that_is_down_is_a_failed_span(wis2l_telemetry: Captured) -> None:
    dev = DevIssuer()
    dev.start()
    token = dev.mint(sub="u")
    cold = TokenVerifier(IssuerKeys(dev.issuer, development=True), audience=dev.audience)
    dev.stop()
    try:
        with pytest.raises(ServiceUnavailable):
            await cold.verify(token)
    finally:
        await cold.keys.aclose()
    span = wis2l_telemetry.span("auth.verify")
    assert (span.attributes or {})["wis2l.auth.outcome"] == "issuer_unavailable"
    assert (span.attributes or {})["error.type"] == "ServiceUnavailable"
    assert span.status.status_code is StatusCode.ERROR
    assert by_outcome(wis2l_telemetry) == {"issuer_unavailable": 1}


async def test_without_an_sdk_nothing_is_made(
    issuer: DevIssuer, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    def make(meter: Any) -> Any:
        raise AssertionError("an instrument was made without an SDK")

    async def refuse(*args: Any) -> Any:
        raise AssertionError("observed_verify ran without an SDK")

    monkeypatch.setattr(_identity, "_VERIFICATIONS", Instruments(make))
    monkeypatch.setattr(_identity, "observed_verify", refuse)
    assert not _identity.observing()
    assert (await verifier.verify(issuer.mint(sub="u")))["sub"] == "u"
