"""TokenVerifier against the dev issuer's JWKS over real sockets: every refusal the
issue lists, refusals that happen before any key fetch, and Hypothesis over claims and
over arbitrary strings."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.helpers import has

from wis2l_core.auth.keys import IssuerKeys
from wis2l_core.auth.verify import MAX_TOKEN_BYTES, TokenVerifier
from wis2l_core.dev.issuer import DevIssuer
from wis2l_core.errors import ServiceUnavailable, Unauthenticated

ALGS = ("RS256", "PS256", "ES256", "EdDSA")


@pytest.fixture(scope="module")
def issuer() -> Iterator[DevIssuer]:
    with DevIssuer(algorithms=ALGS) as dev:
        yield dev


def _verifier(issuer: DevIssuer, **kw: Any) -> TokenVerifier:
    keys = IssuerKeys(issuer.issuer, development=True)
    return TokenVerifier(keys, audience=issuer.audience, **kw)


@pytest.fixture(scope="module")
def warm(issuer: DevIssuer) -> TokenVerifier:
    """A verifier whose keys were fetched once (its HTTP client closed again)."""
    verifier = _verifier(issuer, algorithms=ALGS, leeway=60)

    async def fetch() -> None:
        await verifier.keys.refresh()
        await verifier.keys.aclose()

    asyncio.run(fetch())
    return verifier


def _b64(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("alg", ALGS)
async def test_a_good_token_verifies(issuer: DevIssuer, warm: TokenVerifier, alg: str) -> None:
    token = issuer.mint(sub="u1", email="u@example.io", name="U", alg=alg)
    claims = await warm.verify(token)
    assert (claims["sub"], claims["email"], claims["iss"]) == ("u1", "u@example.io", issuer.issuer)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        ("alg_none", "algorithm 'none'"),
        ("hs256_with_public_key", "algorithm 'HS256'"),
        ("tampered", "bad_signature"),
        ("foreign_key", "bad_signature"),
        ("expired", "expired"),
        ("not_yet_valid", "not yet valid"),
        ("wrong_issuer", "iss"),
        ("wrong_audience", "aud"),
        ("oversized", "larger than"),
        ("unknown_crit", "critical"),
        ("random_kid", "no signing key"),
    ],
)
async def test_bad_tokens_are_refused(
    issuer: DevIssuer, warm: TokenVerifier, make: str, reason: str
) -> None:
    token = getattr(issuer, make)()
    with pytest.raises(Unauthenticated, match=reason) as exc:
        await warm.verify(token)
    assert exc.value.code == "invalid_token"


async def test_hs256_is_refused_even_if_the_settings_list_it(
    issuer: DevIssuer, warm: TokenVerifier
) -> None:
    verifier = TokenVerifier(warm.keys, audience=issuer.audience, algorithms=("HS256", "RS256"))
    assert "HS256" not in verifier.algorithms
    with pytest.raises(Unauthenticated, match="is not accepted"):
        await verifier.verify(issuer.hs256_with_public_key())


async def test_an_algorithm_left_out_of_the_settings_is_refused(
    issuer: DevIssuer, warm: TokenVerifier
) -> None:
    verifier = TokenVerifier(warm.keys, audience=issuer.audience, algorithms=("ES256",))
    with pytest.raises(Unauthenticated, match="RS256"):
        await verifier.verify(issuer.mint(sub="u"))


async def test_shape_and_crit_are_refused_before_any_key_is_fetched(issuer: DevIssuer) -> None:
    """Cheap refusals need no keys: the issuer is never asked."""
    verifier = _verifier(issuer)
    before = issuer.jwks_fetches + issuer.discovery_fetches
    try:
        for token in [
            issuer.oversized(),
            issuer.unknown_crit(),
            issuer.alg_none(),
            issuer.hs256_with_public_key(),
            "a.b",
            "a.b.c.d.e",  # a JWE
            "!!!.e30.sig",
            f"{_b64([1])}.e30.sig",
            "",
        ]:
            with pytest.raises(Unauthenticated):
                await verifier.verify(token)
        assert issuer.jwks_fetches + issuer.discovery_fetches == before
    finally:
        await verifier.keys.aclose()


async def test_the_size_cap_is_16_kib(issuer: DevIssuer, warm: TokenVerifier) -> None:
    assert MAX_TOKEN_BYTES == 16 * 1024
    fits = issuer.mint(sub="u", padding="x" * 11_000)
    assert len(fits) < MAX_TOKEN_BYTES
    assert (await warm.verify(fits))["sub"] == "u"


async def test_audience_lists_and_missing_claims(issuer: DevIssuer, warm: TokenVerifier) -> None:
    ok = issuer.mint(sub="u", audience=["other", issuer.audience])
    assert (await warm.verify(ok))["sub"] == "u"
    for token in [
        issuer.mint(sub="u", audience=["other", "more"]),
        issuer.mint(sub="u", exp=None),  # no exp
        issuer.mint(sub="", ttl=60),  # empty sub
        issuer.mint(sub="u", aud=None),  # no aud
        issuer.mint(sub="u", iss=None),  # no iss
        issuer.mint(sub="u", iat=int(time.time()) + 3600),  # issued in the future
        issuer.mint(sub=None),  # type: ignore[arg-type]  # no sub
    ]:
        with pytest.raises(Unauthenticated):
            await warm.verify(token)


async def test_leeway_applies_to_exp(issuer: DevIssuer, warm: TokenVerifier) -> None:
    just_expired = issuer.mint(sub="u", ttl=-30, iat=int(time.time()) - 300, nbf=None)
    assert (await warm.verify(just_expired))["sub"] == "u"  # leeway 60
    strict = TokenVerifier(warm.keys, audience=issuer.audience, leeway=0)
    with pytest.raises(Unauthenticated, match="expired"):
        await strict.verify(just_expired)


async def test_issuer_down_cold_is_service_unavailable_not_unauthenticated() -> None:
    dev = DevIssuer()
    dev.start()
    token = dev.mint(sub="u")
    verifier = _verifier(dev)
    dev.stop()
    try:
        with pytest.raises(ServiceUnavailable, check=has(service="oidc")):
            await verifier.verify(token)
    finally:
        await verifier.keys.aclose()


# -- Hypothesis ----------------------------------------------------------------------


def _mostly(good: Any, *bad: Any) -> st.SearchStrategy[Any]:
    """``good`` four times in five, else one of ``bad``."""
    return st.one_of(st.just(good), st.just(good), st.just(good), st.just(good)) | (
        st.sampled_from(bad)
    )


@st.composite
def claim_sets(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """Claims and whether a verifier with leeway 60 must accept them (a simple model).

    ``"ISS"``/``"AUD"`` stand for the issuer's own values. Times within 50..70 s of now
    are not drawn: the model stays independent of how fast the test runs.
    """
    times = st.integers(-7200, -71) | st.integers(-49, 49) | st.integers(71, 7200)
    claims: dict[str, Any] = {}
    iss = draw(_mostly("ISS", "https://evil.example", None, 5))
    aud = draw(_mostly("AUD", ["x", "AUD"], "x", ["x"], None, [], 7))
    sub = draw(_mostly("user-1", "", None, 42) | st.text(min_size=1, max_size=20))
    exp = draw(_mostly(3600, None) | times)
    nbf = draw(st.none() | times)
    iat = draw(st.none() | times)
    for name, value in [("iss", iss), ("aud", aud), ("sub", sub)]:
        if value is not None:
            claims[name] = value
    for name, offset in [("exp", exp), ("nbf", nbf), ("iat", iat)]:
        if offset is not None:
            claims[name] = offset  # seconds from now: the test adds the clock
    claims["email"] = draw(st.none() | st.emails())
    accept = (
        iss == "ISS"
        and (aud == "AUD" or (isinstance(aud, list) and "AUD" in aud))
        and isinstance(sub, str)
        and sub != ""
        and exp is not None
        and exp > -60
        and (nbf is None or nbf <= 60)
        and (iat is None or iat <= 60)
    )
    return claims, accept


@given(case=claim_sets(), alg=st.sampled_from(ALGS))
def test_hypothesis_claims_follow_the_model(
    issuer: DevIssuer, warm: TokenVerifier, case: tuple[dict[str, Any], bool], alg: str
) -> None:
    claims, accept = case
    body = dict(claims)
    now = int(time.time())
    for name in ("exp", "nbf", "iat"):
        if name in body:
            body[name] += now
    if body.get("iss") == "ISS":
        body["iss"] = issuer.issuer
    aud = body.get("aud")
    if aud == "AUD":
        body["aud"] = issuer.audience
    elif isinstance(aud, list):
        body["aud"] = [issuer.audience if a == "AUD" else a for a in aud]
    token = DevIssuer.sign(body, issuer._signing_key(alg), alg=alg)
    try:
        got = asyncio.run(warm.verify(token))
    except Unauthenticated:
        assert not accept, f"refused a good token: {body}"
    else:
        assert accept, f"accepted a bad token: {body}"
        assert got["sub"] == body["sub"]


@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_hypothesis_garbage_is_unauthenticated(warm: TokenVerifier, junk: str) -> None:
    with pytest.raises(Unauthenticated, match="malformed token"):
        asyncio.run(warm.verify(junk))


@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "x5u", "jku", "b64"]),
        st.one_of(st.text(max_size=10), st.integers(), st.lists(st.text(max_size=5))),
    ),
    payload=st.dictionaries(st.text(max_size=5), st.integers()),
)
def test_hypothesis_forged_headers_are_unauthenticated(
    issuer: DevIssuer, warm: TokenVerifier, header: dict[str, Any], payload: dict[str, Any]
) -> None:
    token = f"{_b64(header)}.{_b64(payload)}.c2ln"
    with pytest.raises(Unauthenticated):
        asyncio.run(warm.verify(token))


async def test_a_token_of_another_issuer_is_named_before_any_key_lookup(
    issuer: DevIssuer, warm: TokenVerifier
) -> None:
    """A token of another issuer (``wis2l dev token`` against an app with its own issuer)
    is refused as such, naming the issuer expected, not as "no signing key fits kid"; and
    no key is fetched for it."""
    with DevIssuer() as other:
        token = other.mint(sub="elsewhere")
        cold = _verifier(issuer)
        fetches = (issuer.discovery_fetches, issuer.jwks_fetches)
        with pytest.raises(Unauthenticated, match="not the expected issuer") as refused:
            await cold.verify(token)
        assert issuer.issuer in str(refused.value)
        assert other.issuer in str(refused.value)
        assert (issuer.discovery_fetches, issuer.jwks_fetches) == fetches
        await cold.keys.aclose()
    # signed by a key we hold (so found in the cache), the message is the same
    with pytest.raises(Unauthenticated, match="not the expected issuer"):
        await warm.verify(issuer.wrong_issuer())
