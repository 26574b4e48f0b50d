"""A synchronous web app in Flask's shape, on ``wis2l_core.sync`` (no asyncio in sight).

One runtime per process, started with the app and closed at exit; each request handler
calls the repositories and caches as plain methods (WSGI servers run handlers in
threads: the runtime is shared by them). Flask is not needed to run it: the routes sit
on a ten-line WSGI router, so the same handlers drop into ``@app.post(...)`` unchanged.

Run it against your servers (``DATABASE_URL``, ``REDIS_URL``, ``NATS_URL``; pending
migrations are applied)::

    python examples/sync_script.py          # serves a few requests to itself, prints them
    python examples/sync_script.py --serve  # keeps serving on http://127.0.0.1:8000
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any
from uuid import uuid4
from wsgiref.simple_server import WSGIRequestHandler, make_server

from wis2l_core import NotFound, Settings, ValidationError
from wis2l_core.sync import Wis2l

wis = Wis2l(Settings.from_env())  # no I/O yet: started in main()

Handler = Callable[[dict[str, Any]], tuple[int, Any]]
ROUTES: dict[tuple[str, str], Handler] = {}


def route(method: str, path: str) -> Callable[[Handler], Handler]:
    """Flask's ``@app.route(path, methods=[method])``, in miniature."""

    def register(fn: Handler) -> Handler:
        ROUTES[(method, path)] = fn
        return fn

    return register


@route("POST", "/signup")
def signup(body: dict[str, Any]) -> tuple[int, Any]:
    """Create a user and their first project in one transaction; start a session."""
    with wis.transaction() as tx:
        user = tx.users.create(email=body["email"], name=body["name"], subject=body["subject"])
        project = tx.projects.create(
            owner_id=user.id, name=body["project"], slug=body["slug"], engine="godot"
        )
    session = wis.sessions.create(user.id, {"plan": "free"})
    return 201, {"user": str(user.id), "project": str(project.id), "token": session.token}


@route("POST", "/builds")
def start_build(body: dict[str, Any]) -> tuple[int, Any]:
    """Queue a build, rate limited per project (3 a minute), its manifest cached."""
    limit = wis.rate_limiter.hit(f"builds:{body['project']}", limit=3, per=60)
    if not limit.allowed:
        return 429, {"retry_after": round(limit.retry_after, 1)}
    build = wis.builds.create(project_id=body["project"], target=body["target"])
    wis.build_cache.set(f"{body['project']}:{body['target']}", {"build": str(build.id)})
    return 201, {"build": str(build.id), "status": build.status, "left": limit.remaining}


@route("GET", "/health")
def health(_: dict[str, Any]) -> tuple[int, Any]:
    report = wis.health()
    return report.http_status, report.to_dict()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The WSGI entry point: route, run the handler, map our errors to HTTP."""
    handler = ROUTES.get((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
    size = int(environ.get("CONTENT_LENGTH") or 0)
    body = json.loads(environ["wsgi.input"].read(size) or b"{}")
    try:
        status, payload = (404, {"error": "no such route"}) if handler is None else handler(body)
    except NotFound as exc:
        status, payload = 404, {"error": str(exc)}
    except ValidationError as exc:
        status, payload = 422, {"error": str(exc), "field": exc.field}
    data = json.dumps(payload).encode()
    start_response(f"{status} X", [("Content-Type", "application/json")])
    return [data]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def call(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        base + path, data=json.dumps(body or {}).encode(), method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def main() -> None:
    serve = "--serve" in sys.argv
    applied = wis.migrate()
    print(f"migrations applied: {len(applied)}")
    with wis, make_server("127.0.0.1", 8000 if serve else 0, app, handler_class=_Quiet) as http:
        if serve:
            print("serving on http://127.0.0.1:8000 (Ctrl-C stops)")
            http.serve_forever()
            return
        threading.Thread(target=http.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{http.server_port}"
        tag = uuid4().hex[:8]
        status, made = call(
            base,
            "POST",
            "/signup",
            {
                "email": f"ada-{tag}@example.com",
                "name": "Ada",
                "subject": f"nocturna|{tag}",
                "project": "Lighthouse",
                "slug": f"lighthouse-{tag}",
            },
        )
        print(f"signup     {status} session {'ok' if wis.sessions.get(made['token']) else '?'}")
        for _ in range(4):
            status, build = call(
                base, "POST", "/builds", {"project": made["project"], "target": "webgl"}
            )
            print(f"build      {status} {build.get('status') or build}")
        status, _ = call(base, "POST", "/builds", {"project": "not-a-uuid", "target": "webgl"})
        print(f"bad build  {status}")
        status, report = call(base, "GET", "/health")
        print(f"health     {status} {report['status']}")
        http.shutdown()


if __name__ == "__main__":
    main()
