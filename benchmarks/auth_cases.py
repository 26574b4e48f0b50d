"""Benchmark cases for identity and access.

- ``token verification (warm keys)``: ``TokenVerifier.verify`` with the keys already
  fetched vs a bare joserfc verify of the same token with the key in hand
  (``jwt.decode`` + a ``JWTClaimsRegistry`` with the same rules), RS256 and ES256.
- ``middleware latency``: what ``AuthMiddleware`` and ``RateLimitMiddleware`` add per
  request over a bare ASGI app, called in-process (no HTTP server: only the middleware's
  own work, plus the Redis round trip of the rate limit). The token is verified with
  warm keys and the user is in ``wis.identity``'s cache, as on a busy API.
- ``rate limit round trips``: how many Redis commands one request through
  ``RateLimitMiddleware`` sends, counted at redis-py's ``execute_command``.

Each case's functions are listed in :data:`CASES`; :func:`run` runs them all.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from benchmarks.env import Env, settings_for
from benchmarks.harness import Config, Result, Target, measure
from wis2l_core import AuthMiddleware, RateLimitMiddleware, Wis2l
from wis2l_core.asgi import Message, Receive, Scope, Send
from wis2l_core.auth.keys import IssuerKeys
from wis2l_core.auth.verify import TokenVerifier
from wis2l_core.dev.issuer import DevIssuer

__all__ = ["CASES", "run"]

Case = Callable[[Env, Config], Awaitable[Result]]

AUTH_TARGET_MS = 0.3


async def _bare(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Message) -> None:
    return None


def _scope(token: str | None) -> Scope:
    headers = [(b"host", b"bench"), (b"accept", b"*/*")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http",
        "method": "GET",
        "path": "/projects",
        "raw_path": b"/projects",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "http_version": "1.1",
        "headers": headers,
        "client": ("198.51.100.7", 50000),
        "server": ("127.0.0.1", 8000),
    }


@contextlib.asynccontextmanager
async def _runtime(env: Env) -> AsyncIterator[tuple[Wis2l, DevIssuer]]:
    """A runtime on the run's database whose identity trusts a local DevIssuer."""
    with DevIssuer() as issuer:
        settings = settings_for(
            env.servers,
            env.settings.database_url,
            oidc_issuer=issuer.issuer,
            oidc_audience=issuer.audience,
        )
        wis = Wis2l(settings, seed_subscribers=False)
        await wis.start()
        await wis.relay.stop(2)
        try:
            yield wis, issuer
        finally:
            await wis.stop()


def _call(app: Any, scope: Scope) -> Callable[[], Awaitable[None]]:
    async def op() -> None:
        await app(scope, _receive, _send)

    return op


async def middleware_latency(env: Env, config: Config) -> Result:
    """The two middlewares' added latency per request over a bare ASGI app."""
    res = Result("auth middleware per request")
    async with _runtime(env) as (wis, issuer):
        token = issuer.mint(sub="bench|mw", email="mw@bench.io", name="Bench", ttl=3600)
        await wis.identity.authenticate(token)  # warm: keys fetched, user cached
        auth = AuthMiddleware(_bare, wis)
        limited = RateLimitMiddleware(_bare, wis, limit=10**6, per=60, policy="bench")
        both = AuthMiddleware(
            RateLimitMiddleware(_bare, wis, limit=10**6, per=60, policy="bench2"), wis
        )
        scope = _scope(token)
        res.ops = await measure(
            {
                "bare app": _call(_bare, scope),
                "auth (bearer)": _call(auth, scope),
                "rate limit": _call(limited, _scope(None)),
                "auth + rate limit": _call(both, scope),
            },
            iterations=config.n(300),
            config=config,
        )
    bare = res.ops["bare app"].median_ms
    added = {
        name: res.ops[name].median_ms - bare
        for name in ("auth (bearer)", "rate limit", "auth + rate limit")
    }
    for name, value in added.items():
        res.values[f"{name} added p50 us"] = value * 1000
    res.targets.append(Target("auth added p50", added["auth (bearer)"], AUTH_TARGET_MS, "<=", "ms"))
    res.notes = (
        "in-process ASGI calls, no HTTP server; RS256 token, warm keys, cached user; "
        "the rate limit includes its Redis round trip (EVALSHA of the GCRA script)"
    )
    return res


async def ratelimit_round_trips(env: Env, config: Config) -> Result:
    """Redis commands per request through RateLimitMiddleware, counted at redis-py."""
    res = Result("rate limit redis round trips")
    requests = 20 if config.quick else 200
    async with _runtime(env) as (wis, _issuer):
        app = RateLimitMiddleware(_bare, wis, limit=10**6, per=60, policy="trips")
        redis = wis.redis.redis
        original = redis.execute_command
        calls = 0

        async def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return await original(*args, **kwargs)  # type: ignore[no-untyped-call]

        await app(_scope(None), _receive, _send)  # the script is loaded (EVAL) once
        redis.execute_command = counting  # type: ignore[method-assign]
        try:
            for _ in range(requests):
                await app(_scope(None), _receive, _send)
        finally:
            del redis.execute_command
    per_request = calls / requests
    res.values["round trips per request"] = per_request
    res.targets.append(Target("redis round trips per request", per_request, 1, "<=", "rt"))
    res.notes = f"{requests} requests after one warm-up; commands counted at execute_command"
    return res


VERIFY_TARGET = 1.10


async def token_verification(env: Env, config: Config) -> Result:
    """``TokenVerifier.verify`` (warm keys) vs ``joserfc.jwt.decode`` + claims check."""
    from joserfc import jwt
    from joserfc.jwt import JWTClaimsRegistry

    res = Result("token verification (warm keys)")
    with DevIssuer(algorithms=("RS256", "ES256")) as issuer:
        keys = IssuerKeys(issuer.issuer, development=True)
        verifier = TokenVerifier(keys, audience=issuer.audience)
        try:
            await keys.refresh()
            for alg in ("RS256", "ES256"):
                token = issuer.mint(sub="bench", email="b@bench.io", name="B", ttl=3600, alg=alg)
                kid = issuer._signing_key(alg).kid
                key = keys.cached(kid, alg)
                assert key is not None
                registry = JWTClaimsRegistry(
                    leeway=60,
                    iss={"essential": True, "value": issuer.issuer},
                    aud={"essential": True, "value": issuer.audience},
                    sub={"essential": True},
                    exp={"essential": True},
                )

                async def library(token: str = token) -> object:
                    return await verifier.verify(token)

                async def bare(
                    token: str = token,
                    key: Any = key,
                    alg: str = alg,
                    registry: JWTClaimsRegistry = registry,
                ) -> object:
                    claims = jwt.decode(token, key, algorithms=[alg]).claims
                    registry.validate(claims)
                    return claims

                ops = await measure(
                    {f"library {alg}": library, f"bare joserfc {alg}": bare},
                    iterations=config.n(400),
                    config=config,
                )
                res.ops.update(ops)
                ratio = res.ratio(f"{alg} library / bare", f"library {alg}", f"bare joserfc {alg}")
                res.targets.append(
                    Target(
                        f"{alg} ratio vs bare joserfc",
                        ratio,
                        VERIFY_TARGET,
                        "<=",
                        ratio=f"{alg} library / bare",
                    )
                )
        finally:
            await keys.aclose()
    res.notes = (
        "RSA 2048 and P-256 keys from a local DevIssuer; keys fetched once before timing; "
        "bare: jwt.decode + JWTClaimsRegistry.validate with the key in hand"
    )
    return res


CASES: list[Case] = [token_verification, middleware_latency, ratelimit_round_trips]
"""Every auth case, in the order :func:`run` runs them."""


async def run(env: Env, config: Config) -> list[Result]:
    """Run every case of :data:`CASES`."""
    return [await case(env, config) for case in CASES]
