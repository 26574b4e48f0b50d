"""An HTTP API over the repositories, behind AuthMiddleware and RateLimitMiddleware.

Projects, builds, deployments and design tokens, as JSON over Starlette and uvicorn.
Every route asks ``wis.access`` (the permission table of the identity guide) before it
reads or writes, and every write records its event in the same transaction; a
subscriber prints the events as the outbox relay publishes them::

    pip install -e ".[examples]"
    python examples/api_app.py --port 8080

Tokens: with ``WIS2L_OIDC_ISSUER`` set (``wis2l dev`` exports it), that issuer's; the
script makes the four users and ``wis2l dev token --sub nocturna|ada`` prints a token
for Ada. Without it, the script starts a local issuer of its own (``DevIssuer``,
standing in for nocturnaID.org) and prints a token for each user (``token <who> <role>
<jwt>``). Then, for example::

    curl -s -H "Authorization: Bearer $ADA" localhost:8080/projects -d \
        '{"name": "Tide Keeper", "slug": "tide-keeper", "engine": "godot"}'
    curl -s -H "Authorization: Bearer $ADA" -X PATCH \
        localhost:8080/builds/<id> -d '{"status": "building"}'

``uvicorn examples.api_app:app --no-proxy-headers`` serves the same app (nothing runs at
import; the lifespan starts the runtime). ``--no-proxy-headers`` matters: by default
uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 and rewrites the client address
before the middleware sees it, so a client on the host could pick a new address, and a
fresh rate-limit bucket, with each request. Behind a proxy, name it in
``--trusted-proxy`` (``API_TRUSTED_PROXIES`` for ``uvicorn``) and let
``RateLimitMiddleware`` read the header.

Routes (all JSON; ``/health`` is public and not rate limited):

- ``GET /me``; ``GET|POST /projects``; ``GET|PATCH /projects/{slug}``
- ``GET|POST /projects/{slug}/builds``; ``PATCH /builds/{id}`` (status, progress)
- ``GET|POST /projects/{slug}/deployments``; ``PATCH /deployments/{id}`` (status, url)
- ``GET /projects/{slug}/tokens``; ``PUT /projects/{slug}/tokens/{name}``
- ``GET /projects/{slug}/events`` (the project's audit log)

Two limits: ``--limit`` requests per ``--per`` seconds per user, and ``--ip-limit`` per
client address for every request, refused ones included (policies ``api`` and
``client`` in the ``RateLimit`` fields). ``--port 0`` picks a free port (the line
``serving http://127.0.0.1:<port>`` tells which). SIGINT or SIGTERM stops the server and
the runtime. Set DATABASE_URL / REDIS_URL / NATS_URL to use your servers, else an
embedded stack runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from wis2l_core import (
    Action,
    AuthMiddleware,
    BuildCompleted,
    BuildFailed,
    BuildProgress,
    BuildStarted,
    DeploymentCompleted,
    DeploymentFailed,
    DeploymentStarted,
    Principal,
    RateLimitMiddleware,
    Role,
    TokenUpdated,
    Wis2l,
    health_app,
)
from wis2l_core.dev.issuer import DevIssuer
from wis2l_core.errors import Conflict, NotFound, ValidationError
from wis2l_core.models import Build, Deployment, DesignToken, Project

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # imported as examples.api_app (uvicorn): _common is beside it
    sys.path.insert(0, _HERE)
from _common import runtime  # noqa: E402

Endpoint = Callable[[Request], Awaitable[Response]]

USERS = (  # who, role: a token is printed for each
    ("admin", Role.ADMIN),
    ("ada", Role.DEVELOPER),
    ("bo", Role.DEVELOPER),
    ("vi", Role.VIEWER),
)


def as_json(model: Project | Build | Deployment | DesignToken) -> dict[str, Any]:
    """The fields of a model a client needs, JSON-ready."""
    if isinstance(model, Project):
        return {
            "id": str(model.id),
            "slug": model.slug,
            "name": model.name,
            "engine": model.engine.value,
            "owner_id": str(model.owner_id),
        }
    if isinstance(model, Build):
        return {
            "id": str(model.id),
            "target": model.target,
            "status": model.status.value,
            "progress": model.progress,
        }
    if isinstance(model, Deployment):
        return {
            "id": str(model.id),
            "environment": model.environment.value,
            "version": model.version,
            "status": model.status.value,
            "url": model.url,
        }
    return {
        "name": model.name,
        "category": model.category.value,
        "value": model.value,
        "version": model.version,
    }


class BadRequest(Exception):
    """The request body is not a JSON object (answered 400)."""


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object.

    Raises:
        BadRequest: the body is not JSON, or not an object.
    """
    try:
        body = await request.json()
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise BadRequest("the body is not JSON") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


class Api:
    """The endpoints: each asks ``wis.access`` before it reads or writes."""

    def __init__(self, wis: Wis2l) -> None:
        self.wis = wis

    def caller(self, request: Request) -> Principal:
        user = request.user
        assert isinstance(user, Principal)  # AuthMiddleware: no anonymous off /health
        return user

    async def project_for(self, request: Request, action: Action) -> Project:
        project = await self.wis.projects.find_by_slug(request.path_params["slug"])
        if project is None:
            raise NotFound(f"no project {request.path_params['slug']!r}")
        self.wis.access.require(request.user, action, project)
        return project

    async def owning(self, project_id: UUID, action: Action, request: Request) -> None:
        project = await self.wis.projects.find_by_id(project_id)
        self.wis.access.require(request.user, action, project)

    async def me(self, request: Request) -> Response:
        user = self.caller(request).user
        return JSONResponse({"name": user.name, "role": user.role.value})

    async def projects(self, request: Request) -> Response:
        if request.method == "GET":
            self.wis.access.require(request.user, Action.PROJECT_READ)
            page = await self.wis.projects.find_all()
            return JSONResponse([as_json(p) for p in page.items])
        self.wis.access.require(request.user, Action.PROJECT_CREATE)
        body = await json_body(request)
        project = await self.wis.projects.create(
            owner_id=self.caller(request).user.id,
            name=body["name"],
            slug=body["slug"],
            engine=body["engine"],
        )
        return JSONResponse(as_json(project), status_code=201)

    async def project(self, request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(as_json(await self.project_for(request, Action.PROJECT_READ)))
        found = await self.project_for(request, Action.PROJECT_UPDATE)
        body = await json_body(request)
        changes = {k: body[k] for k in ("name", "description") if k in body}
        return JSONResponse(as_json(await self.wis.projects.update(found.id, **changes)))

    async def builds(self, request: Request) -> Response:
        if request.method == "GET":
            found = await self.project_for(request, Action.BUILD_READ)
            page = await self.wis.builds.find_by_project_id(found.id)
            return JSONResponse([as_json(b) for b in page.items])
        found = await self.project_for(request, Action.BUILD_CREATE)
        body = await json_body(request)
        build = await self.wis.builds.create(project_id=found.id, target=body["target"])
        return JSONResponse(as_json(build), status_code=201)

    async def build(self, request: Request) -> Response:
        found = await self.wis.builds.find_by_id(request.path_params["id"])
        if found is None:
            raise NotFound("no such build")
        await self.owning(found.project_id, Action.BUILD_UPDATE, request)
        body = await json_body(request)
        changes = {k: body[k] for k in ("status", "progress") if k in body}
        return JSONResponse(as_json(await self.wis.builds.update(found.id, **changes)))

    async def deployments(self, request: Request) -> Response:
        if request.method == "GET":
            found = await self.project_for(request, Action.DEPLOYMENT_READ)
            page = await self.wis.deployments.find_by_project_id(found.id)
            return JSONResponse([as_json(d) for d in page.items])
        found = await self.project_for(request, Action.DEPLOYMENT_CREATE)
        body = await json_body(request)
        made = await self.wis.deployments.create(
            project_id=found.id,
            environment=body["environment"],
            version=body["version"],
            build_id=body.get("build_id"),
        )
        return JSONResponse(as_json(made), status_code=201)

    async def deployment(self, request: Request) -> Response:
        found = await self.wis.deployments.find_by_id(request.path_params["id"])
        if found is None:
            raise NotFound("no such deployment")
        await self.owning(found.project_id, Action.DEPLOYMENT_UPDATE, request)
        body = await json_body(request)
        changes = {k: body[k] for k in ("status", "url") if k in body}
        return JSONResponse(as_json(await self.wis.deployments.update(found.id, **changes)))

    async def tokens(self, request: Request) -> Response:
        found = await self.project_for(request, Action.TOKEN_READ)
        page = await self.wis.tokens.find_all(found.id)
        return JSONResponse([as_json(t) for t in page.items])

    async def token(self, request: Request) -> Response:
        found = await self.project_for(request, Action.TOKEN_UPDATE)
        body = await json_body(request)
        saved = await self.wis.tokens.upsert(
            project_id=found.id,
            name=request.path_params["name"],
            category=body["category"],
            value=body["value"],
            group=body.get("group"),
        )
        return JSONResponse(as_json(saved))

    async def events(self, request: Request) -> Response:
        found = await self.project_for(request, Action.AUDIT_READ)
        page = await self.wis.events.find_by_project_id(found.id)
        return JSONResponse([e.type for e in page.items])


def error(status: int) -> Callable[[Request, Exception], Awaitable[Response]]:
    """An exception handler answering ``status`` with a problem body."""

    async def handle(_: Request, exc: Exception) -> Response:
        body = {"title": type(exc).__name__, "status": status, "detail": str(exc)}
        return JSONResponse(body, status, media_type="application/problem+json")

    return handle


def api(
    wis: Wis2l,
    *,
    limit: int,
    per: float,
    ip_limit: int | None = None,
    trusted_proxies: Sequence[str] = (),
) -> Starlette:
    """The Starlette app: routes, error mapping, and the middlewares.

    Args:
        wis: a started runtime with an issuer.
        limit: requests per ``per`` seconds per user.
        per: the window, in seconds.
        ip_limit: requests per ``per`` seconds per client address, refused ones too
            (default: five times ``limit``).
        trusted_proxies: reverse proxies whose ``X-Forwarded-For`` is believed.
    """
    a = Api(wis)
    return Starlette(
        routes=[
            Mount("/health", app=health_app(wis)),
            Route("/me", a.me),
            Route("/projects", a.projects, methods=["GET", "POST"]),
            Route("/projects/{slug}", a.project, methods=["GET", "PATCH"]),
            Route("/projects/{slug}/builds", a.builds, methods=["GET", "POST"]),
            Route("/builds/{id:uuid}", a.build, methods=["PATCH"]),
            Route("/projects/{slug}/deployments", a.deployments, methods=["GET", "POST"]),
            Route("/deployments/{id:uuid}", a.deployment, methods=["PATCH"]),
            Route("/projects/{slug}/tokens", a.tokens),
            Route("/projects/{slug}/tokens/{name}", a.token, methods=["PUT"]),
            Route("/projects/{slug}/events", a.events),
        ],
        middleware=[  # the first is the outermost: count per address, authenticate,
            # then count per user
            Middleware(
                RateLimitMiddleware,
                wis=wis,
                limit=ip_limit or 5 * limit,
                per=per,
                policy="client",
                trusted_proxies=trusted_proxies,
                exempt_paths=("/health",),
            ),
            Middleware(AuthMiddleware, wis=wis, public_paths=("/health",)),
            Middleware(
                RateLimitMiddleware,
                wis=wis,
                limit=limit,
                per=per,
                policy="api",
                exempt_paths=("/health",),
            ),
        ],
        exception_handlers={
            BadRequest: error(400),
            NotFound: error(404),
            Conflict: error(409),
            ValidationError: error(422),
            KeyError: error(422),  # a field missing from the JSON body
        },
    )


def print_events(wis: Wis2l) -> None:
    """Print what the writes publish, as the outbox relay delivers it."""

    async def show(event: Any) -> None:
        print(f"event      {event.type:<20} project {event.project_id.hex[-8:]}", flush=True)

    for kind in (
        BuildStarted,
        BuildProgress,
        BuildCompleted,
        BuildFailed,
        DeploymentStarted,
        DeploymentCompleted,
        DeploymentFailed,
        TokenUpdated,
    ):
        wis.bus.subscribe(kind, show, durable="api-app-log", concurrency=1)


async def make_users(wis: Wis2l, issuer: DevIssuer | None) -> None:
    """One user per role, and, with our own issuer, a token (an hour) for each."""
    for who, role in USERS:
        subject = f"nocturna|{who}"
        user = await wis.users.find_by_subject(subject)
        if user is None:
            email = f"{who}@example.com"
            user = await wis.users.create(email=email, name=who.title(), subject=subject, role=role)
        if issuer is None:
            print(f"user       {who:<6} {user.role.value:<10} wis2l dev token --sub '{subject}'")
        else:
            token = issuer.mint(sub=subject, email=user.email, name=user.name, ttl=3600)
            print(f"token      {who:<6} {user.role.value:<10} {token}")


@contextlib.asynccontextmanager
async def started(
    *, limit: int, per: float, ip_limit: int | None, trusted_proxies: Sequence[str]
) -> AsyncIterator[Starlette]:
    """The issuer (``WIS2L_OIDC_ISSUER``, else a ``DevIssuer`` of our own), the runtime,
    the users and the event printer; yields the API, stops them all after."""
    async with contextlib.AsyncExitStack() as stack:
        issuer: DevIssuer | None = None
        configured = os.environ.get("WIS2L_OIDC_ISSUER")
        settings: dict[str, Any]
        if configured:
            settings = {
                "oidc_issuer": configured,
                "oidc_audience": os.environ.get("WIS2L_OIDC_AUDIENCE"),
                "oidc_role_claim": os.environ.get("WIS2L_OIDC_ROLE_CLAIM"),
            }
            print(f"issuer     {configured} (WIS2L_OIDC_ISSUER)")
        else:
            issuer = stack.enter_context(DevIssuer())
            settings = {"oidc_issuer": issuer.issuer, "oidc_audience": issuer.audience}
            print(f"issuer     {issuer.issuer} (audience {issuer.audience})")
        wis = await stack.enter_async_context(runtime(**settings))
        await make_users(wis, issuer)
        print_events(wis)
        yield api(wis, limit=limit, per=per, ip_limit=ip_limit, trusted_proxies=trusted_proxies)
        print("server stopped; stopping the runtime", flush=True)


class App:
    """The ASGI app ``uvicorn examples.api_app:app`` serves: nothing happens at import;
    the lifespan startup runs :func:`started` and shutdown stops it."""

    def __init__(
        self,
        *,
        limit: int = 120,
        per: float = 60.0,
        ip_limit: int | None = None,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        self._options: dict[str, Any] = {
            "limit": limit,
            "per": per,
            "ip_limit": ip_limit,
            "trusted_proxies": tuple(trusted_proxies),
        }
        self._api: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif self._api is None:
            raise RuntimeError("examples.api_app.App needs the lifespan (uvicorn's default)")
        else:
            await self._api(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        async with contextlib.AsyncExitStack() as stack:
            try:
                self._api = await stack.enter_async_context(started(**self._options))
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        self._api = None
        await send({"type": "lifespan.shutdown.complete"})


def _proxies_from_env() -> tuple[str, ...]:
    raw = os.environ.get("API_TRUSTED_PROXIES", "")
    return tuple(p.strip() for p in raw.split(",") if p.strip())


app = App(trusted_proxies=_proxies_from_env())
"""For ``uvicorn examples.api_app:app --no-proxy-headers``."""


def server_config(asgi: Any, *, host: str, port: int) -> uvicorn.Config:
    """How this example runs uvicorn: ``proxy_headers=False``, so the client address is
    the connection's peer and only ``RateLimitMiddleware``'s ``trusted_proxies`` may
    replace it (uvicorn's default believes ``X-Forwarded-For`` from 127.0.0.1)."""
    return uvicorn.Config(asgi, host=host, port=port, log_level="warning", proxy_headers=False)


class Server(uvicorn.Server):
    """uvicorn, stopping on SIGINT/SIGTERM without re-raising the signal (the runtime
    still stops cleanly after it), printing its address once it listens."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"serving    http://{host}:{port}", flush=True)


async def main(args: argparse.Namespace) -> None:
    asgi = App(
        limit=args.limit,
        per=args.per,
        ip_limit=args.ip_limit,
        trusted_proxies=args.trusted_proxy,
    )
    await Server(server_config(asgi, host=args.host, port=args.port)).serve()
    print("stopped cleanly")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0: any free port")
    parser.add_argument("--limit", type=int, default=120, help="requests per --per per user")
    parser.add_argument("--ip-limit", type=int, default=None, help="per address (5x --limit)")
    parser.add_argument("--per", type=float, default=60.0)
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="a reverse proxy (address or network) whose X-Forwarded-For is believed",
    )
    arguments = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    asyncio.run(main(arguments))
