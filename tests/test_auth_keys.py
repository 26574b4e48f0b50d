"""IssuerKeys against the dev issuer over real sockets: caching, single-flight, the
unknown-kid cooldown (a storm of random kids is counted at the issuer), rotation, stale
keys while the issuer is down, cold start, redirects, timeouts and the https rule."""

from __future__ import annotations

import asyncio
import time

import pytest
from tests.helpers import has

from wis2l_core.auth.keys import IssuerKeys, check_issuer_url, key_matches
from wis2l_core.dev.issuer import DevIssuer
from wis2l_core.errors import ConfigError, ServiceUnavailable, Unauthenticated


def _keys(issuer: DevIssuer, **kw: float) -> IssuerKeys:
    return IssuerKeys(issuer.issuer, development=True, **kw)


def _rsa_kid(issuer: DevIssuer) -> str:
    return issuer.kids[0]  # DevIssuer makes RS256 first


async def test_keys_are_fetched_once_and_cached(oidc_issuer: DevIssuer) -> None:
    keys = _keys(oidc_issuer)
    try:
        kid = _rsa_kid(oidc_issuer)
        first = await keys.get(kid, "RS256")
        for _ in range(50):
            assert await keys.get(kid, "RS256") is first
        assert keys.cached(kid, "RS256") is first
        assert (oidc_issuer.discovery_fetches, oidc_issuer.jwks_fetches) == (1, 1)
    finally:
        await keys.aclose()


async def test_one_fetch_in_flight_however_many_wait(oidc_issuer: DevIssuer) -> None:
    oidc_issuer.delay = 0.3
    keys = _keys(oidc_issuer)
    try:
        kid = _rsa_kid(oidc_issuer)
        found = await asyncio.gather(*(keys.get(kid, "RS256") for _ in range(100)))
        assert len({id(k) for k in found}) == 1
        assert oidc_issuer.jwks_fetches == 1
        assert oidc_issuer.discovery_fetches == 1
    finally:
        await keys.aclose()


async def test_a_storm_of_random_kids_is_not_a_storm_of_fetches(oidc_issuer: DevIssuer) -> None:
    keys = _keys(oidc_issuer, cooldown=0.5)
    try:
        await keys.get(_rsa_kid(oidc_issuer), "RS256")
        await asyncio.sleep(0.55)  # the cooldown since the first fetch has passed
        refused = 0

        async def one(i: int) -> None:
            nonlocal refused
            try:
                await keys.get(f"random-{i}", "RS256")
            except Unauthenticated:
                refused += 1

        await asyncio.gather(*(one(i) for i in range(300)))
        for i in range(300, 600):  # and one after another
            await one(i)
        assert refused == 600
        # the first fetch, then at most one refetch for the whole storm
        assert oidc_issuer.jwks_fetches == 2
    finally:
        await keys.aclose()


async def test_unknown_kid_refetches_after_the_cooldown(oidc_issuer: DevIssuer) -> None:
    keys = _keys(oidc_issuer, cooldown=0.5)
    try:
        await keys.get(_rsa_kid(oidc_issuer), "RS256")
        new = oidc_issuer.rotate("ES256")  # an EC key: made in a millisecond
        with pytest.raises(Unauthenticated, match="no signing key of the issuer fits"):
            await keys.get(new, "ES256")  # inside the cooldown of the first fetch
        assert oidc_issuer.jwks_fetches == 1
        await asyncio.sleep(0.55)
        assert await keys.get(new, "ES256") is not None  # the unknown kid refetched
        assert oidc_issuer.jwks_fetches == 2
        with pytest.raises(Unauthenticated, match="no signing key of the issuer fits"):
            await keys.get("nope", "RS256")  # inside the new cooldown: no fetch
        assert oidc_issuer.jwks_fetches == 2
        await asyncio.sleep(0.55)
        with pytest.raises(Unauthenticated, match="no signing key of the issuer fits"):
            await keys.get("nope", "RS256")
        assert oidc_issuer.jwks_fetches == 3
    finally:
        await keys.aclose()


async def test_rotation_old_keys_serve_until_withdrawn(oidc_issuer: DevIssuer) -> None:
    keys = _keys(oidc_issuer, cooldown=0.0)
    try:
        old = _rsa_kid(oidc_issuer)
        await keys.get(old, "RS256")
        new = oidc_issuer.rotate()
        await keys.get(new, "RS256")
        assert await keys.get(old, "RS256") is not None  # both serve
        oidc_issuer.withdraw(old)
        await keys.refresh()
        with pytest.raises(Unauthenticated, match="no signing key of the issuer fits"):
            await keys.get(old, "RS256")
        assert await keys.get(new, "RS256") is not None
    finally:
        await keys.aclose()


async def test_cache_control_max_age_is_honoured_within_bounds(oidc_issuer: DevIssuer) -> None:
    oidc_issuer.max_age = 3600
    keys = _keys(oidc_issuer, max_ttl=0.3, min_ttl=0.0)
    try:
        kid = _rsa_kid(oidc_issuer)
        await keys.get(kid, "RS256")
        await keys.get(kid, "RS256")
        assert oidc_issuer.jwks_fetches == 1
        await asyncio.sleep(0.35)  # clamped to max_ttl
        await keys.get(kid, "RS256")
        assert oidc_issuer.jwks_fetches == 2
    finally:
        await keys.aclose()
    oidc_issuer.max_age = 0
    keys = _keys(oidc_issuer, min_ttl=0.5)
    try:
        await keys.get(kid, "RS256")
        await asyncio.sleep(0.2)
        await keys.get(kid, "RS256")  # max-age 0 is raised to min_ttl
        assert oidc_issuer.jwks_fetches == 3
    finally:
        await keys.aclose()
    assert keys._ttl("public, max-age=120") == 120
    assert keys._ttl("no-store") == keys.min_ttl
    assert keys._ttl("") == keys.default_ttl
    assert keys._ttl("max-age=99999999") == keys.max_ttl


async def test_issuer_down_stale_keys_serve_then_run_out(oidc_issuer: DevIssuer) -> None:
    keys = _keys(oidc_issuer, min_ttl=0.0, max_ttl=0.1, stale_for=0.6, retry_after=0.0)
    try:
        kid = _rsa_kid(oidc_issuer)
        held = await keys.get(kid, "RS256")
        oidc_issuer.stop()
        await asyncio.sleep(0.15)  # past the TTL: a refresh is due and fails
        assert await keys.get(kid, "RS256") is held
        with pytest.raises(
            Unauthenticated, match="no signing key of the issuer fits"
        ):  # an unknown kid is still a bad token
            await keys.get("other", "RS256")
        await asyncio.sleep(0.6)  # past the stale bound
        with pytest.raises(ServiceUnavailable) as exc:
            await keys.get(kid, "RS256")
        assert exc.value.service == "oidc"
        oidc_issuer.start()  # back: the keys come back
        assert await keys.get(kid, "RS256") is not None
    finally:
        await keys.aclose()


async def test_cold_start_with_the_issuer_down_is_service_unavailable(
    oidc_issuer: DevIssuer,
) -> None:
    oidc_issuer.stop()
    keys = _keys(oidc_issuer)
    try:
        with pytest.raises(ServiceUnavailable) as exc:
            await keys.get("any", "RS256")
        assert exc.value.service == "oidc"
        assert not isinstance(exc.value, Unauthenticated)
    finally:
        await keys.aclose()


async def test_an_outage_costs_one_fetch_per_retry_after(oidc_issuer: DevIssuer) -> None:
    oidc_issuer.failing = 503
    keys = _keys(oidc_issuer, retry_after=0.5)
    try:
        for _ in range(50):  # a cold start: every call is ServiceUnavailable at once
            with pytest.raises(ServiceUnavailable, check=has(service="oidc")):
                await keys.get("any", "RS256")
        assert oidc_issuer.discovery_fetches == 1
        await asyncio.sleep(0.55)
        oidc_issuer.failing = None
        kid = _rsa_kid(oidc_issuer)
        assert await keys.get(kid, "RS256") is not None
        assert oidc_issuer.discovery_fetches == 2
        # warm, then down with stale keys: they serve, and the issuer is asked once
        keys.min_ttl = keys.max_ttl = 0.0
        await keys.refresh()
        oidc_issuer.failing = 503
        before = oidc_issuer.jwks_fetches
        for _ in range(50):
            assert await keys.get(kid, "RS256") is not None
        assert oidc_issuer.jwks_fetches + oidc_issuer.discovery_fetches - before <= 3
    finally:
        await keys.aclose()


@pytest.mark.parametrize("status", [500, 503, 404, 302])
async def test_an_error_answer_or_a_redirect_is_service_unavailable(
    oidc_issuer: DevIssuer, status: int
) -> None:
    oidc_issuer.failing = status
    keys = _keys(oidc_issuer)
    try:
        with pytest.raises(ServiceUnavailable, match=str(status)):
            await keys.get("any", "RS256")
        assert oidc_issuer.jwks_fetches == 0  # discovery failed: no redirect followed
    finally:
        await keys.aclose()


@pytest.mark.timing
async def test_a_slow_issuer_times_out(oidc_issuer: DevIssuer) -> None:
    oidc_issuer.delay = 2.0
    keys = _keys(oidc_issuer, timeout=0.3)
    start = time.monotonic()
    try:
        with pytest.raises(ServiceUnavailable, check=has(service="oidc")):
            await keys.get("any", "RS256")
    finally:
        await keys.aclose()
    assert time.monotonic() - start < 1.5


async def test_discovery_must_name_our_issuer(oidc_issuer: DevIssuer) -> None:
    other = oidc_issuer.issuer.replace("127.0.0.1", "localhost")
    keys = IssuerKeys(other, development=True)
    try:
        with pytest.raises(ServiceUnavailable, match="discovery names issuer"):
            await keys.get("any", "RS256")
    finally:
        await keys.aclose()


def test_https_only_except_loopback_in_development() -> None:
    check_issuer_url("https://id.example.org", development=False)
    check_issuer_url("http://127.0.0.1:8080", development=True)
    check_issuer_url("http://[::1]:8080", development=True)
    check_issuer_url("http://localhost:8080", development=True)
    for url, dev in [
        ("http://127.0.0.1:8080", False),
        ("http://id.example.org", True),
        ("http://10.0.0.1", True),
        ("ftp://id.example.org", True),
        ("https://", True),
    ]:
        with pytest.raises(ConfigError, check=has(variable="oidc_issuer")):
            check_issuer_url(url, development=dev)
    with pytest.raises(ConfigError, check=has(variable="oidc_issuer")):
        IssuerKeys("http://id.example.org")


async def test_the_key_type_must_match_the_algorithm() -> None:
    issuer = DevIssuer(algorithms=("RS256", "ES256", "EdDSA")).start()
    keys = _keys(issuer)
    try:
        rsa, ec, okp = issuer.kids
        assert await keys.get(rsa, "RS256") is not None
        # the key's own "alg" (RS256) binds it: PS256 with it is refused
        for kid, alg in [
            (rsa, "PS256"),
            (rsa, "ES256"),
            (ec, "RS256"),
            (okp, "ES256"),
            (ec, "EdDSA"),
        ]:
            with pytest.raises(Unauthenticated, match="no signing key of the issuer fits"):
                await keys.get(kid, alg)
        assert await keys.get(ec, "ES256") is not None
        assert await keys.get(okp, "EdDSA") is not None
        held = keys.cached(ec, "ES256")
        assert held is not None
        assert key_matches(held, "ES256")
        assert not key_matches(held, "ES384")  # P-256 is not ES384's curve
    finally:
        await keys.aclose()
        issuer.stop()


async def test_cancelled_waiters_leave_the_shared_fetch_running(oidc_issuer: DevIssuer) -> None:
    oidc_issuer.delay = 0.3
    keys = _keys(oidc_issuer)
    try:
        kid = _rsa_kid(oidc_issuer)
        waiters = [asyncio.create_task(keys.get(kid, "RS256")) for _ in range(10)]
        await asyncio.sleep(0.1)
        for waiter in waiters[:9]:
            waiter.cancel()
        assert await waiters[9] is not None  # the one left still gets the keys
        assert all(w.cancelled() for w in waiters[:9])
        # every waiter cancelled: the fetch still completes and fills the cache
        later = _keys(oidc_issuer)
        try:
            gone = [asyncio.create_task(later.get(kid, "RS256")) for _ in range(5)]
            await asyncio.sleep(0.1)
            for waiter in gone:
                waiter.cancel()
            await asyncio.sleep(1.0)  # discovery and JWKS, 0.3 s each
            assert later.cached(kid, "RS256") is not None
        finally:
            await later.aclose()
        assert oidc_issuer.jwks_fetches == 2  # one per key set, none repeated
    finally:
        await keys.aclose()
