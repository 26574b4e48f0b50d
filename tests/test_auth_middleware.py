"""AuthMiddleware and RateLimitMiddleware under a real uvicorn, in front of a Starlette app
and a FastAPI app (both read ``request.user``), with tokens from a real DevIssuer over
HTTP, an httpx client and a websockets client."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from tests.helpers import field_is
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from wis2l_core import Action, AuthMiddleware, RateLimitMiddleware, Settings, Wis2l
from wis2l_core.asgi import Credentials
from wis2l_core.asgi._origin import origin_of
from wis2l_core.dev.issuer import DevIssuer
from wis2l_core.models import Engine, Role

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def issuer() -> Iterator[DevIssuer]:
    with DevIssuer() as running:
        yield running


def with_issuer(settings: Settings, issuer: DevIssuer) -> Settings:
    return attrs.evolve(settings, oidc_issuer=issuer.issuer, oidc_audience=issuer.audience)


@pytest.fixture
async def wis(wis2l_settings: Settings, issuer: DevIssuer) -> AsyncIterator[Wis2l]:
    async with Wis2l(with_issuer(wis2l_settings, issuer)) as runtime:
        yield runtime


class Server(uvicorn.Server):
    """uvicorn in the test's loop, without touching the process's signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve(app: Any, lifespan: str = "on") -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", ws="websockets-sansio", lifespan=lifespan)
    server = Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 10)
        finally:
            sock.close()


def user_view(request: Request | WebSocket) -> dict[str, Any]:
    auth = request.auth
    assert isinstance(auth, Credentials)
    return {
        "authenticated": request.user.is_authenticated,
        "name": request.user.display_name,
        "scheme": auth.scheme,
        "scopes": sorted(auth.scopes),
    }


def starlette_app(wis: Wis2l, **limits: Any) -> Starlette:
    async def me(request: Request) -> JSONResponse:
        return JSONResponse(user_view(request))

    async def rename(request: Request) -> JSONResponse:
        project = await wis.projects.find_by_slug(request.path_params["slug"])
        wis.access.require(request.user, Action.PROJECT_UPDATE, project)
        assert project is not None
        body = await request.json()
        renamed = await wis.projects.update(project.id, name=body["name"])
        return JSONResponse({"name": renamed.name})

    @requires("user:manage")
    async def admin_only(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(user_view(websocket))
        await websocket.close()

    middleware = [Middleware(AuthMiddleware, wis=wis, public_paths=("/public",))]
    if limits:
        middleware.append(Middleware(RateLimitMiddleware, wis=wis, **limits))
    return Starlette(
        routes=[
            Route("/me", me),
            Route("/public/me", me),
            Route("/projects/{slug}", rename, methods=["PATCH"]),
            Route("/admin", admin_only),
            WebSocketRoute("/ws", ws),
        ],
        middleware=middleware,
    )


def fastapi_app(wis: Wis2l, **limits: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/me")
    @app.get("/public/me")
    async def me(request: Request) -> dict[str, Any]:
        return user_view(request)

    @app.patch("/projects/{slug}")
    async def rename(slug: str, request: Request) -> dict[str, str]:
        project = await wis.projects.find_by_slug(slug)
        wis.access.require(request.user, Action.PROJECT_UPDATE, project)
        assert project is not None
        body = await request.json()
        renamed = await wis.projects.update(project.id, name=body["name"])
        return {"name": renamed.name}

    @app.get("/admin")
    async def admin_only(request: Request) -> dict[str, bool]:
        wis.access.require(request.user, Action.USER_MANAGE)
        return {"ok": True}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(user_view(websocket))
        await websocket.close()

    if limits:
        app.add_middleware(RateLimitMiddleware, wis=wis, **limits)
    app.add_middleware(AuthMiddleware, wis=wis, public_paths=("/public",))
    return app


APPS = {"starlette": starlette_app, "fastapi": fastapi_app}


@pytest.fixture(params=sorted(APPS))
async def url(request: pytest.FixtureRequest, wis: Wis2l) -> AsyncIterator[str]:
    async with serve(APPS[request.param](wis)) as base:
        yield base


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["cache-control"] == "no-store"
    body: dict[str, Any] = answer.json()
    assert body["status"] == status
    return body


async def test_no_credentials_is_401_without_an_error_code(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.get("/me")
        problem(answer, 401)
        assert answer.headers["www-authenticate"] == 'Bearer realm="wis2l"'
        other_scheme = await http.get("/me", headers={"Authorization": "Basic YTpi"})
        assert other_scheme.headers["www-authenticate"] == 'Bearer realm="wis2l"'


async def test_a_valid_token_sets_request_user(url: str, wis: Wis2l, issuer: DevIssuer) -> None:
    token = issuer.mint(sub="n|ada", email="ada@example.com", name="Ada")
    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.get("/me", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["authenticated"] is True
    assert body["name"] == "Ada"
    assert body["scheme"] == "bearer"
    assert "project:create" in body["scopes"]
    assert "user:manage" not in body["scopes"]
    user = await wis.users.find_by_subject("n|ada")
    assert user is not None
    assert user.role is Role.DEVELOPER


@pytest.mark.parametrize(
    "bad",
    [
        "expired",
        "not_yet_valid",
        "wrong_audience",
        "wrong_issuer",
        "foreign_key",
        "alg_none",
        "hs256_with_public_key",
        "tampered",
    ],
)
async def test_a_bad_token_is_401_invalid_token(url: str, issuer: DevIssuer, bad: str) -> None:
    token = getattr(issuer, bad)()
    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.get("/me", headers=bearer(token))
    body = problem(answer, 401)
    assert answer.headers["www-authenticate"] == 'Bearer realm="wis2l", error="invalid_token"'
    # the body names the issuer whose tokens are accepted, and not why this one failed
    assert (
        body["detail"] == f"the credentials are not valid; tokens are accepted from {issuer.issuer}"
    )


async def test_the_reason_of_a_refusal_is_logged_not_answered(
    url: str, issuer: DevIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wis2l_core.auth")
    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.get("/me", headers=bearer(issuer.wrong_issuer()))
    assert "wrong" not in answer.text
    (record,) = [r for r in caplog.records if r.getMessage().startswith("credentials refused")]
    assert record.levelno == logging.DEBUG
    assert "not the expected issuer" in record.reason  # type: ignore[attr-defined]
    assert record.path == "/me"  # type: ignore[attr-defined]


async def test_a_token_with_another_users_email_signs_in_without_it(
    url: str, wis: Wis2l, issuer: DevIssuer
) -> None:
    """E-mail squatting: the address stays its owner's, the newcomer still signs in, and
    nothing tells the caller that the address is registered."""
    first = await wis.users.create(email="taken@example.com", name="First", subject="n|first")
    token = issuer.mint(sub="n|second", email="taken@example.com", name="Second")
    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.get("/me", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    assert answer.json()["name"] == "Second"
    assert "taken" not in answer.text
    assert await wis.users.find_by_email("taken@example.com") == first


async def test_a_malformed_header_is_400_invalid_request(url: str, issuer: DevIssuer) -> None:
    token = issuer.mint(sub="n|ada", email="ada@example.com", name="Ada")
    async with httpx.AsyncClient(base_url=url) as http:
        spaced = await http.get("/me", headers={"Authorization": "Bearer a b"})
        empty = await http.get("/me", headers={"Authorization": "Bearer"})
        twice = await http.get(
            "/me", headers=[("Authorization", f"Bearer {token}"), ("Authorization", "Bearer x")]
        )
    for answer in (spaced, empty, twice):
        problem(answer, 400)
        assert answer.headers["www-authenticate"].endswith('error="invalid_request"')


async def test_public_paths_serve_anonymous_and_still_know_a_valid_user(
    url: str, issuer: DevIssuer
) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        anonymous = (await http.get("/public/me")).json()
        expired = (await http.get("/public/me", headers=bearer(issuer.expired()))).json()
        token = issuer.mint(sub="n|bo", email="bo@example.com", name="Bo")
        known = (await http.get("/public/me", headers=bearer(token))).json()
        # a lookalike and a dot-segment trick are not public
        assert (await http.get("/publicity")).status_code == 401
    assert anonymous == {"authenticated": False, "name": "", "scheme": None, "scopes": []}
    assert expired["authenticated"] is False
    assert known["name"] == "Bo"


async def test_forbidden_from_the_endpoint_is_403_and_ownership_counts(
    url: str, wis: Wis2l, issuer: DevIssuer
) -> None:
    owner_token = issuer.mint(sub="n|own", email="own@example.com", name="Owner")
    other_token = issuer.mint(sub="n|oth", email="oth@example.com", name="Other")
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/me", headers=bearer(owner_token))).status_code == 200
        owner = await wis.users.find_by_subject("n|own")
        assert owner is not None
        await wis.projects.create(owner_id=owner.id, name="P", slug="p-1", engine=Engine.GODOT)
        refused = await http.patch("/projects/p-1", json={"name": "X"}, headers=bearer(other_token))
        body = problem(refused, 403)
        assert "project:update" in body["detail"]
        done = await http.patch("/projects/p-1", json={"name": "Y"}, headers=bearer(owner_token))
        assert done.status_code == 200, done.text
        assert done.json() == {"name": "Y"}
        assert (await http.get("/admin", headers=bearer(other_token))).status_code == 403
        other = await wis.users.find_by_subject("n|oth")
        assert other is not None
        await wis.users.update(other.id, role=Role.ADMIN)
        wis.identity.forget("n|oth")  # else seen within identity.user_ttl
        admin = await http.patch("/projects/p-1", json={"name": "Z"}, headers=bearer(other_token))
        assert admin.status_code == 200, admin.text
        assert (await http.get("/admin", headers=bearer(other_token))).status_code == 200


async def test_session_cookie_and_cross_site_requests(
    url: str, wis: Wis2l, issuer: DevIssuer
) -> None:
    token = issuer.mint(sub="n|cookie", email="c@example.com", name="Cookie")
    principal, session = await wis.identity.sign_in(token)
    owner = principal.user
    await wis.projects.create(owner_id=owner.id, name="P", slug="p-c", engine=Engine.GODOT)
    cookies = {"wis2l_session": session.token}
    async with httpx.AsyncClient(base_url=url, cookies=cookies) as http:
        me = await http.get("/me")
        assert me.status_code == 200, me.text
        assert me.json()["scheme"] == "session"
        same = await http.patch(
            "/projects/p-c", json={"name": "A"}, headers={"Sec-Fetch-Site": "same-origin"}
        )
        assert same.status_code == 200, same.text
        cross = await http.patch(
            "/projects/p-c", json={"name": "B"}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        problem(cross, 403)
        host = url.removeprefix("http://")
        evil = await http.patch(
            "/projects/p-c", json={"name": "C"}, headers={"Origin": "https://evil.example"}
        )
        problem(evil, 403)
        ok = await http.patch("/projects/p-c", json={"name": "D"}, headers={"Origin": url})
        assert ok.status_code == 200, (host, ok.text)
        await wis.sessions.revoke(session.token)
        gone = await http.get("/me")
        problem(gone, 401)
        assert gone.headers["www-authenticate"].endswith('error="invalid_token"')
    project = await wis.projects.find_by_slug("p-c")
    assert project is not None
    assert project.name == "D"


# (headers, allowed) for a cookie write: the one CSRF rule of wis2l_core.asgi._origin
CSRF_CASES: list[tuple[dict[str, str], bool]] = [
    ({"Referer": "https://evil.example/page"}, False),  # what broke: no Origin, cross-site
    ({}, False),  # a browser sends at least one of the three
    ({"Origin": "null"}, False),
    ({"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"}, False),
    ({"Sec-Fetch-Site": "same-site"}, False),
    ({"Sec-Fetch-Site": "cross-site", "Referer": "{url}/page"}, False),
    ({"Referer": "{url}/projects/p-r"}, True),
    ({"Sec-Fetch-Site": "none"}, True),
    ({"Origin": "{url}", "Referer": "https://evil.example/"}, True),
]


async def test_cookie_writes_follow_the_one_csrf_rule(
    url: str, wis: Wis2l, issuer: DevIssuer
) -> None:
    """Origin, else Sec-Fetch-Site, else a same-origin Referer, else refused (the studio
    applies the same rule, see test_studio.py)."""
    token = issuer.mint(sub="n|csrf", email="csrf@example.com", name="Csrf")
    principal, session = await wis.identity.sign_in(token)
    await wis.projects.create(owner_id=principal.user.id, name="P", slug="p-r", engine=Engine.GODOT)
    cookies = {"wis2l_session": session.token}
    async with httpx.AsyncClient(base_url=url, cookies=cookies) as http:
        for i, (template, allowed) in enumerate(CSRF_CASES):
            headers = {k: v.replace("{url}", url) for k, v in template.items()}
            answer = await http.patch("/projects/p-r", json={"name": f"N{i}"}, headers=headers)
            if allowed:
                assert answer.status_code == 200, (headers, answer.text)
            else:
                assert problem(answer, 403)["detail"] == "cross-site request refused", headers
            project = await wis.projects.find_by_slug("p-r")
            assert project is not None
            assert (project.name == f"N{i}") is allowed, headers


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("HTTP://Example.COM:80/a?b", "http://example.com"),
        ("https://example.com:443", "https://example.com"),
        ("https://example.com:8443/", "https://example.com:8443"),
        ("http://[::1]:5555/t/users", "http://[::1]:5555"),
        ("null", None),
        ("/relative/path", None),
        ("http://example.com:port/", None),
        ("http://[::1", None),
    ],
)
def test_origin_of_normalizes_what_the_csrf_rule_compares(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin


async def test_websocket_is_authenticated_before_accept(url: str, issuer: DevIssuer) -> None:
    ws_url = url.replace("http://", "ws://") + "/ws"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url):
            pass
    assert refused.value.response.status_code == 401
    assert refused.value.response.headers["WWW-Authenticate"] == 'Bearer realm="wis2l"'
    with pytest.raises(InvalidStatus) as expired:
        async with connect(ws_url, additional_headers=bearer(issuer.expired())):
            pass
    assert expired.value.response.status_code == 401
    token = issuer.mint(sub="n|ws", email="ws@example.com", name="Socket")
    async with connect(ws_url, additional_headers=bearer(token)) as socket_:
        assert '"name":"Socket"' in str(await socket_.recv())


async def test_cookie_websocket_from_another_site_is_refused(
    url: str, wis: Wis2l, issuer: DevIssuer
) -> None:
    token = issuer.mint(sub="n|wsc", email="wsc@example.com", name="Sock")
    _, session = await wis.identity.sign_in(token)
    ws_url = url.replace("http://", "ws://") + "/ws"
    cookie = {"Cookie": f"wis2l_session={session.token}"}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url, additional_headers=cookie, origin="https://evil.example"):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    async with connect(ws_url, additional_headers=cookie, origin=url) as socket_:  # type: ignore[arg-type]
        assert '"scheme":"session"' in str(await socket_.recv())


async def test_issuer_down_on_a_cold_start_is_503(wis2l_settings: Settings) -> None:
    down = DevIssuer().start()
    down.failing = 503
    try:
        async with Wis2l(with_issuer(wis2l_settings, down)) as runtime:
            token = down.mint(sub="n|x", email="x@example.com", name="X")
            async with (
                serve(starlette_app(runtime)) as base,
                httpx.AsyncClient(base_url=base) as http,
            ):
                answer = await http.get("/me", headers=bearer(token))
                problem(answer, 503)
                assert answer.headers["retry-after"] == "5"
                public = await http.get("/public/me", headers=bearer(token))
                assert public.json()["authenticated"] is False
    finally:
        down.stop()


# -- the app docs/guides/identity.md shows ---------------------------------------------------

IDENTITY_PAGE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "identity.md"


def documented_fastapi_app(wis: Wis2l) -> Any:
    """The FastAPI block of the identity guide, run as the page shows it, its ``app``."""
    blocks = re.findall(r"```python\n(.*?)```", IDENTITY_PAGE.read_text(), re.DOTALL)
    (block,) = [b for b in blocks if "app = FastAPI()" in b]
    namespace: dict[str, Any] = {"wis": wis}
    exec(compile(block, str(IDENTITY_PAGE), "exec"), namespace)
    return namespace["app"]


async def test_the_fastapi_app_of_the_identity_guide(wis: Wis2l, issuer: DevIssuer) -> None:
    """The guide's FastAPI app under uvicorn: the owner starts a build, another developer
    gets 403 (with the RateLimit fields), no token 401."""
    owner = issuer.mint(sub="n|doc-own", email="doc-own@example.com", name="Owner")
    other = issuer.mint(sub="n|doc-oth", email="doc-oth@example.com", name="Other")
    async with serve(documented_fastapi_app(wis)) as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/health")).status_code == 404  # public: no 401 first
        assert (await http.get("/me", headers=bearer(owner))).status_code == 404
        found = await wis.users.find_by_subject("n|doc-own")
        assert found is not None
        await wis.projects.create(owner_id=found.id, name="D", slug="doc-1", engine=Engine.WEB)
        path = "/projects/doc-1/builds"
        made = await http.post(path, headers=bearer(owner))
        assert made.status_code == 200, made.text
        build = await wis.builds.find_by_id(made.json()["id"])
        assert build is not None
        assert build.target == "html5"
        refused = await http.post(path, headers=bearer(other))
        body = problem(refused, 403)
        assert "build:create" in body["detail"]
        assert refused.headers["ratelimit-policy"] == '"default";q=100;w=60'
        problem(await http.post(path), 401)


# -- rate limiting -------------------------------------------------------------------------


@pytest.mark.parametrize("framework", sorted(APPS))
async def test_rate_limit_headers_429_and_per_user_buckets(
    framework: str, wis: Wis2l, issuer: DevIssuer
) -> None:
    app = APPS[framework](wis, limit=3, per=60, policy="api")
    ada = issuer.mint(sub="n|rl-ada", email="rla@example.com", name="Ada")
    bo = issuer.mint(sub="n|rl-bo", email="rlb@example.com", name="Bo")
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as http:
        answers = [await http.get("/me", headers=bearer(ada)) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        for answer in answers:
            assert answer.headers["ratelimit-policy"] == '"api";q=3;w=60'
        remaining = [a.headers["ratelimit"].split(";")[1] for a in answers]
        assert remaining == ["r=2", "r=1", "r=0", "r=0"]
        assert answers[0].headers["ratelimit"] in ('"api";r=2;t=20', '"api";r=2;t=21')
        body = problem(answers[3], 429)
        assert body["title"] == "Too Many Requests"
        assert 1 <= int(answers[3].headers["retry-after"]) <= 20
        # another user has a bucket of their own; a 403 the endpoint raises is counted
        # and carries the fields too
        assert (await http.get("/me", headers=bearer(bo))).status_code == 200
        refused = await http.patch("/projects/none", json={"name": "x"}, headers=bearer(bo))
        problem(refused, 403)
        assert refused.headers["ratelimit-policy"] == '"api";q=3;w=60'
        assert refused.headers["ratelimit"].startswith('"api";r=1;')
        # anonymous callers are counted by address; the public path is counted too
        anon = [await http.get("/public/me") for _ in range(4)]
        assert [a.status_code for a in anon] == [200, 200, 200, 429]


async def test_rate_limit_is_one_redis_round_trip_per_request(
    wis: Wis2l, issuer: DevIssuer
) -> None:
    """Counted at redis-py's one door (``execute_command``), with and without the limit:
    the difference is what the rate limit costs."""
    token = issuer.mint(sub="n|rt", email="rt@example.com", name="RT")
    calls = 0
    redis = wis.redis.redis
    original = redis.execute_command

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await original(*args, **kwargs)

    async def count(app: Starlette) -> int:
        nonlocal calls
        async with serve(app) as base, httpx.AsyncClient(base_url=base) as http:
            await http.get("/me", headers=bearer(token))  # warm: user, keys, script
            calls = 0
            for _ in range(20):
                assert (await http.get("/me", headers=bearer(token))).status_code == 200
        return calls

    redis.execute_command = counting  # type: ignore[method-assign]
    try:
        without = await count(starlette_app(wis))
        with_limit = await count(starlette_app(wis, limit=1000, per=60))
    finally:
        del redis.execute_command
    assert with_limit - without == 20


@pytest.mark.parametrize(
    ("words", "mode"),
    [
        ({"fail_mode": "open"}, "open"),
        ({"fail_mode": "closed"}, "closed"),
        # the former words still work, with a DeprecationWarning
        ({"on_redis_down": "allow"}, "open"),
        ({"on_redis_down": "refuse"}, "closed"),
    ],
)
async def test_redis_down_policy(
    words: dict[str, Any],
    mode: str,
    wis2l_settings: Settings,
    issuer: DevIssuer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = attrs.evolve(
        with_issuer(wis2l_settings, issuer), redis_url=f"redis://127.0.0.1:{port}/0"
    )
    runtime = Wis2l(settings)
    await runtime.start()
    try:

        async def hello(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"hi"})

        with (
            pytest.warns(DeprecationWarning, match="on_redis_down")
            if "on_redis_down" in words
            else contextlib.nullcontext()
        ):
            app = RateLimitMiddleware(hello, runtime, limit=5, per=1, **words)
        caplog.set_level(logging.WARNING, logger="wis2l_core.auth")
        async with serve(app, "off") as base, httpx.AsyncClient(base_url=base) as http:
            answers = [await http.get("/") for _ in range(3)]
        if mode == "open":
            assert [a.status_code for a in answers] == [200, 200, 200]
            assert all("ratelimit" not in a.headers for a in answers)
        else:
            for answer in answers:
                problem(answer, 503)
        assert all(a.headers["ratelimit-policy"] == '"default";q=5;w=1' for a in answers)
        logged = [r for r in caplog.records if r.name == "wis2l_core.auth"]
        assert len(logged) == 1, logged
    finally:
        await runtime.stop()


# -- the pure parts: client address and public paths -----------------------------------------


def address(mw: RateLimitMiddleware, peer: str, *forwarded: str) -> str:
    headers = [(b"x-forwarded-for", f.encode()) for f in forwarded]
    return mw._client_address({"type": "http", "client": (peer, 5000), "headers": headers})


@pytest.fixture
def limiter(wis2l_settings: Settings) -> RateLimitMiddleware:
    runtime = Wis2l(wis2l_settings)
    return RateLimitMiddleware(
        None,  # type: ignore[arg-type]
        runtime,
        limit=1,
        per=1,
        trusted_proxies=("10.0.0.0/8", "2001:db8:ffff::1"),
    )


def test_forwarded_for_is_trusted_only_from_proxies_and_read_from_the_right(
    limiter: RateLimitMiddleware,
) -> None:
    # an untrusted peer's header is ignored
    assert address(limiter, "203.0.113.9", "1.2.3.4") == "203.0.113.9"
    # a trusted proxy: the rightmost untrusted entry (what the proxy saw), not a spoof
    assert address(limiter, "10.0.0.2", "6.6.6.6, 198.51.100.7") == "198.51.100.7"
    # two proxies in a row, and several headers read as one list
    assert address(limiter, "10.0.0.2", "6.6.6.6", "198.51.100.7, 10.1.1.1") == "198.51.100.7"
    # garbage stops the walk at the last proxy that is known
    assert address(limiter, "10.0.0.2", "198.51.100.7, nonsense") == "10.0.0.2"
    # no header from a proxy: the proxy
    assert address(limiter, "10.0.0.2") == "10.0.0.2"
    # IPv6 clients share a bucket per /64; v4-mapped addresses are v4
    assert address(limiter, "2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert address(limiter, "2001:db8:ffff::1", "2001:db8:9:9::1") == "2001:db8:9:9::/64"
    assert address(limiter, "::ffff:192.0.2.1") == "192.0.2.1"
    assert limiter._client_address({"type": "http", "headers": []}) == "unknown"


def test_configuration_is_checked(wis2l_settings: Settings) -> None:
    from wis2l_core.errors import ConfigError, ValidationError

    runtime = Wis2l(wis2l_settings)
    app: Any = None
    with pytest.raises(ConfigError, match="trusted_proxies"):
        RateLimitMiddleware(app, runtime, limit=1, per=1, trusted_proxies=("not-an-ip",))
    with pytest.raises(ValidationError, check=field_is("limit")):
        RateLimitMiddleware(app, runtime, limit=0, per=1)
    with pytest.raises(ValidationError, check=field_is("per")):
        RateLimitMiddleware(app, runtime, limit=1, per=0)
    with pytest.raises(ValidationError, match="million"):
        RateLimitMiddleware(app, runtime, limit=10**9, per=60)
    with pytest.raises(ConfigError, match="policy"):
        RateLimitMiddleware(app, runtime, limit=1, per=1, policy='a"b')
    with pytest.raises(ConfigError, match="fail_mode"):
        RateLimitMiddleware(app, runtime, limit=1, per=1, fail_mode="raise")  # type: ignore[arg-type]
    old_word = "on_redis_down"
    with pytest.warns(DeprecationWarning, match=old_word), pytest.raises(ConfigError):
        RateLimitMiddleware(app, runtime, limit=1, per=1, on_redis_down="deny")  # type: ignore[arg-type]
    with (
        pytest.warns(DeprecationWarning, match=old_word),
        pytest.raises(ConfigError, match="not both"),
    ):
        RateLimitMiddleware(app, runtime, limit=1, per=1, fail_mode="closed", on_redis_down="allow")
    with pytest.raises(ConfigError, match="public path"):
        AuthMiddleware(app, runtime, public_paths=("health",))
    with pytest.raises(ConfigError, match="realm"):
        AuthMiddleware(app, runtime, realm='x"y')


def test_public_path_matching() -> None:
    from wis2l_core.asgi._http import path_matcher as _public_matcher

    public = _public_matcher(["/health", "/docs/"])
    assert public("/health")
    assert public("/health/ready")
    assert public("/docs")
    assert public("/docs/index.html")
    assert not public("/healthz")
    assert not public("/health/../admin")
    assert not public("/health/./x")
    assert not public("//health")
    assert not public("/admin")
    assert not _public_matcher([])("/health")


TRUSTED = ipaddress.ip_network("10.0.0.0/8")
untrusted_v4 = st.ip_addresses(v=4).filter(lambda a: a not in TRUSTED)
proxies_v4 = st.ip_addresses(network="10.0.0.0/8")


@settings(max_examples=200)
@given(
    spoofed=st.lists(st.one_of(st.ip_addresses().map(str), st.text(max_size=12)), max_size=4),
    client=untrusted_v4,
    hops=st.lists(proxies_v4, min_size=1, max_size=4),
)
def test_forwarded_for_property(
    limiter: RateLimitMiddleware,
    spoofed: list[str],
    client: ipaddress.IPv4Address,
    hops: list[ipaddress.IPv4Address],
) -> None:
    """Whatever a client puts in X-Forwarded-For, behind a chain of trusted proxies (each
    appending the address it saw), the address counted is the client's own."""
    *inner, peer = hops
    chain = [*spoofed, str(client), *map(str, inner)]
    assert address(limiter, str(peer), ", ".join(chain)) == str(client)
    # ...and without a trusted peer, the header is not read at all
    assert address(limiter, str(client), ", ".join(chain)) == str(client)
