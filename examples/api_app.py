"""An HTTP API over the repositories, behind AuthMiddleware and RateLimitMiddleware.

Projects, builds, deployments and design tokens, as JSON over Starlette and uvicorn.
Every route asks ``wis.access`` (the permission table of the identity guide) before it
reads or writes, and every write records its event in the same transaction; a
subscriber prints the events as the outbox relay publishes them::

    pip install -e ".[examples,auth]" starlette
    python examples/api_app.py --port 8080

Tokens come from a local OpenID Connect issuer (``DevIssuer``, the one ``wis2l dev``
runs) standing in for nocturnaID.org: the script makes four users and prints a token for
each (``token <who> <role> <jwt>``); then, for example::

    curl -s -H "Authorization: Bearer $ADA" localhost:8080/projects -d \
        '{"name": "Tide Keeper", "slug": "tide-keeper", "engine": "godot"}'
    curl -s -H "Authorization: Bearer $ADA" -X PATCH \
        localhost:8080/builds/<id> -d '{"status": "building"}'

Routes (all JSON; ``/health`` is public and not rate limited):

- ``GET /me``; ``GET|POST /projects``; ``GET|PATCH /projects/{slug}``
- ``GET|POST /projects/{slug}/builds``; ``PATCH /builds/{id}`` (status, progress)
- ``GET|POST /projects/{slug}/deployments``; ``PATCH /deployments/{id}`` (status, url)
- ``GET /projects/{slug}/tokens``; ``PUT /projects/{slug}/tokens/{name}``
- ``GET /projects/{slug}/events`` (the project's audit log)

``--port 0`` picks a free port (the line ``serving http://127.0.0.1:<port>`` tells which).
SIGINT or SIGTERM stops the server and the runtime. Set DATABASE_URL / REDIS_URL /
NATS_URL to use your servers, else an embedded stack runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Generator
from typing import Any
from uuid import UUID

import uvicorn
from _common import runtime
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

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
        body = await request.json()
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
        body = await request.json()
        changes = {k: body[k] for k in ("name", "description") if k in body}
        return JSONResponse(as_json(await self.wis.projects.update(found.id, **changes)))

    async def builds(self, request: Request) -> Response:
        if request.method == "GET":
            found = await self.project_for(request, Action.BUILD_READ)
            page = await self.wis.builds.find_by_project_id(found.id)
            return JSONResponse([as_json(b) for b in page.items])
        found = await self.project_for(request, Action.BUILD_CREATE)
        body = await request.json()
        build = await self.wis.builds.create(project_id=found.id, target=body["target"])
        return JSONResponse(as_json(build), status_code=201)

    async def build(self, request: Request) -> Response:
        found = await self.wis.builds.find_by_id(request.path_params["id"])
        if found is None:
            raise NotFound("no such build")
        await self.owning(found.project_id, Action.BUILD_UPDATE, request)
        body = await request.json()
        changes = {k: body[k] for k in ("status", "progress") if k in body}
        return JSONResponse(as_json(await self.wis.builds.update(found.id, **changes)))

    async def deployments(self, request: Request) -> Response:
        if request.method == "GET":
            found = await self.project_for(request, Action.DEPLOYMENT_READ)
            page = await self.wis.deployments.find_by_project_id(found.id)
            return JSONResponse([as_json(d) for d in page.items])
        found = await self.project_for(request, Action.DEPLOYMENT_CREATE)
        body = await request.json()
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
        body = await request.json()
        changes = {k: body[k] for k in ("status", "url") if k in body}
        return JSONResponse(as_json(await self.wis.deployments.update(found.id, **changes)))

    async def tokens(self, request: Request) -> Response:
        found = await self.project_for(request, Action.TOKEN_READ)
        page = await self.wis.tokens.find_all(found.id)
        return JSONResponse([as_json(t) for t in page.items])

    async def token(self, request: Request) -> Response:
        found = await self.project_for(request, Action.TOKEN_UPDATE)
        body = await request.json()
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


def api(wis: Wis2l, *, limit: int, per: float) -> Starlette:
    """The Starlette app: routes, error mapping, and both middlewares."""
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
        middleware=[  # the first is the outermost: authenticate, then count per user
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


async def make_users(wis: Wis2l, issuer: DevIssuer) -> None:
    """One user per role, and a token (an hour) for each."""
    for who, role in USERS:
        subject = f"nocturna|{who}"
        user = await wis.users.find_by_subject(subject)
        if user is None:
            email = f"{who}@example.com"
            user = await wis.users.create(email=email, name=who.title(), subject=subject, role=role)
        token = issuer.mint(sub=subject, email=user.email, name=user.name, ttl=3600)
        print(f"token      {who:<6} {user.role.value:<10} {token}")


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


async def main(host: str, port: int, limit: int, per: float) -> None:
    with DevIssuer() as issuer:
        print(f"issuer     {issuer.issuer} (audience {issuer.audience})")
        async with runtime(oidc_issuer=issuer.issuer, oidc_audience=issuer.audience) as wis:
            await make_users(wis, issuer)
            print_events(wis)
            config = uvicorn.Config(
                api(wis, limit=limit, per=per), host=host, port=port, log_level="warning"
            )
            await Server(config).serve()
            print("server stopped; stopping the runtime")
    print("stopped cleanly")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0: any free port")
    parser.add_argument("--limit", type=int, default=120, help="requests per --per seconds")
    parser.add_argument("--per", type=float, default=60.0)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    asyncio.run(main(args.host, args.port, args.limit, args.per))
