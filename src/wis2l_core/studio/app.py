"""The studio's ASGI app (Starlette): server-rendered pages over the catalog and the
repositories, a little hand-written JS for the live panel, no build step.

Routes: ``/`` (tables, health, outbox backlog, live events), ``/t/<table>`` (a keyset
page with filters and sorting), ``/t/<table>/row?k=<key>`` (one row and its relations both
ways), ``/t/<table>/new`` and the row's ``update``/``delete`` (``--write`` only, CSRF
checked), ``/live`` (Server-Sent Events), ``/status.json``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from wis2l_core.errors import NotFound, ValidationError, Wis2lError
from wis2l_core.studio import render, writes
from wis2l_core.studio.edit import new_row, row_delete, row_update
from wis2l_core.studio.hosts import HostGuard
from wis2l_core.studio.live import LiveFeed
from wis2l_core.studio.pages import Studio, error_page, page, row_context, row_key
from wis2l_core.studio.queries import Filter, count_rows, fetch_page, fetch_row

__all__ = ["Studio", "create_app"]

log = logging.getLogger("wis2l_core.studio")


def _filters(request: Request) -> list[Filter]:
    q = request.query_params
    cols, ops, vals = q.getlist("fc"), q.getlist("fo"), q.getlist("fv")
    if not (len(cols) == len(ops) and len(vals) in (0, len(cols))):
        raise ValidationError("filters are fc, fo and fv triples", field="filter")
    vals = vals or [""] * len(cols)
    return [Filter(c, o, v) for c, o, v in zip(cols, ops, vals, strict=True) if c]


async def index(request: Request) -> Response:
    """The overview: every table with its row count, health, outbox backlog, the newest
    events of the audit log, and the live panel."""
    studio: Studio = request.app.state.studio
    db = studio.wis.database
    try:
        catalog = await studio.catalog(fresh=True)
        counts = {key: await count_rows(db, t) for key, t in catalog.tables.items()}
        events = catalog.by_name("public", "events")
        if events is not None and not {c.name for c in events.columns} >= _EVENT_COLUMNS:
            events = None  # an app's own table of that name
        # Newest first by key: ids are UUIDv7, and each partition's key index is read
        # backwards, so this reads about _NEWEST rows per partition, whatever the size.
        newest = (await fetch_page(db, events, desc=True, limit=_NEWEST)).rows if events else []
    except Wis2lError as exc:
        return error_page(request, exc)
    health = await studio.wis.health()
    backlog: Any = None
    try:
        backlog = await studio.wis.relay.backlog()
    except Wis2lError as exc:
        backlog = exc
    return page(
        request,
        "index.html",
        title="Overview",
        catalog=catalog,
        counts=counts,
        health=health,
        backlog=backlog,
        events=events,
        newest=newest,
        live=studio.live is not None,
    )


_NEWEST = 12
_EVENT_COLUMNS = {"created_at", "type", "subsystem", "project_id", "subject", "published_at"}


async def table_page(request: Request) -> Response:
    """One keyset page of a table (``sort``, ``desc``, ``after``, ``limit``, ``fc/fo/fv``)."""
    studio: Studio = request.app.state.studio
    q = request.query_params
    try:
        catalog, table = await studio.table(request.path_params["table"])
        filters = _filters(request)
        sort = q.get("sort") or None
        desc = q.get("desc") == "1"
        try:
            limit = int(q.get("limit", "50"))
        except ValueError as exc:
            raise ValidationError("limit must be a number", field="limit") from exc
        start = time.perf_counter()
        rows = await fetch_page(
            studio.wis.database,
            table,
            filters=filters,
            sort=sort,
            desc=desc,
            after=q.get("after") or None,
            limit=limit,
        )
        count = await count_rows(studio.wis.database, table)
        elapsed_ms = (time.perf_counter() - start) * 1000
    except Wis2lError as exc:
        return error_page(request, exc)
    base: dict[str, Any] = {
        "sort": sort,
        "desc": "1" if desc else None,
        "limit": limit if limit != 50 else None,
    }
    base |= {
        "fc": [f.column for f in filters],
        "fo": [f.op for f in filters],
        "fv": [f.value for f in filters],
    }
    return page(
        request,
        "table.html",
        title=table.key,
        catalog=catalog,
        table=table,
        page=rows,
        count=count,
        filters=filters,
        sort=sort,
        desc=desc,
        base=base,
        first=bool(q.get("after")),
        elapsed_ms=elapsed_ms,
        editor=writes.editor(table),
        wide=True,
    )


async def row_page(request: Request) -> Response:
    """One row (``?k=`` per primary-key column) and its relations both ways."""
    studio: Studio = request.app.state.studio
    try:
        catalog, table = await studio.table(request.path_params["table"])
        row = await fetch_row(studio.wis.database, table, row_key(request))
        if row is None:
            raise NotFound(f"{table.key} has no row {', '.join(row_key(request))}")
        context = await row_context(studio, table, catalog, row)
    except Wis2lError as exc:
        return error_page(request, exc)
    done = request.query_params.get("done")
    return page(
        request,
        "row.html",
        title=f"{table.key} · {render.row_label(table, row)}",
        catalog=catalog,
        table=table,
        row=row,
        notice=done,
        show=writes.show,
        **context,
    )


async def live_stream(request: Request) -> Response:
    """Server-Sent Events of the live feed (``event: nats``, one JSON object each)."""
    studio: Studio = request.app.state.studio
    if studio.live is None:
        return JSONResponse({"error": "no live feed"}, status_code=404)
    return StreamingResponse(
        studio.live.stream(request.is_disconnected),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def status(request: Request) -> Response:
    """``health()``, the outbox backlog and the live feed's state as JSON (polled)."""
    studio: Studio = request.app.state.studio
    report = await studio.wis.health()
    body: dict[str, Any] = {"health": report.to_dict()}
    try:
        backlog = await studio.wis.relay.backlog()
        body["outbox"] = {"size": backlog.size, "oldest_age_s": backlog.oldest_age_s}
    except Wis2lError as exc:
        body["outbox"] = {"error": str(exc)}
    body["live"] = studio.live is not None and studio.live.connected
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        b"frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class _SecurityHeaders:
    """Adds a strict CSP and friends to every response (pure ASGI: SSE streams untouched)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    wis: Any,
    *,
    write: bool = False,
    live: LiveFeed | None = None,
    host: str = "127.0.0.1",
    port: int = 5555,
) -> Starlette:
    """The studio as an ASGI app over a started ``Wis2l``.

    Args:
        wis: the runtime (its pool, repositories, relay and health are used).
        write: allow create, update and delete through the repositories.
        live: the live feed behind ``/live`` (``None``: no live panel).
        host: the address it is served on: requests must name it (or loopback) in
            ``Host``, and writes must come from pages there (DNS rebinding, CSRF).
        port: the port it is served on (:meth:`Studio.serve_on` changes both later).

    Returns:
        A Starlette app; ``app.state.studio`` is its :class:`Studio`.
    """
    studio = Studio(wis=wis, write=write, live=live)
    studio.serve_on(host, port)
    static = StaticFiles(packages=[("wis2l_core.studio", "static")])
    app = Starlette(
        routes=[
            Route("/", index),
            Route("/status.json", status),
            Route("/live", live_stream),
            Route("/t/{table}", table_page),
            Route("/t/{table}/row", row_page),
            Route("/t/{table}/row/update", row_update, methods=["POST"]),
            Route("/t/{table}/row/delete", row_delete, methods=["POST"]),
            Route("/t/{table}/new", new_row, methods=["GET", "POST"]),
            Mount("/static", static, name="static"),
        ],
        middleware=[
            Middleware(_SecurityHeaders),
            Middleware(HostGuard, accepted=lambda: studio.hosts),  # before any handler
        ],
    )
    app.state.studio = studio
    return app
