"""The studio's ASGI app (Starlette): server-rendered pages over the catalog and the
repositories, a little hand-written JS for the live panel, no build step.

Routes: ``/`` (tables, health, outbox backlog, live events), ``/t/<table>`` (a keyset
page with filters and sorting), ``/t/<table>/row?k=<key>`` (one row and its relations both
ways), ``/t/<table>/new`` and the row's ``update``/``delete`` (``--write`` only, CSRF
checked), ``/live`` (Server-Sent Events), ``/status.json``.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from wis2l_core.errors import (
    Conflict,
    InvalidTransition,
    NotFound,
    ServiceUnavailable,
    ValidationError,
    Wis2lError,
)
from wis2l_core.studio import render, writes
from wis2l_core.studio.catalog import Catalog, ForeignKey, Table, load_catalog
from wis2l_core.studio.live import LiveFeed
from wis2l_core.studio.queries import (
    OPERATORS,
    Filter,
    count_rows,
    fetch_page,
    fetch_related,
    fetch_row,
)

__all__ = ["Studio", "create_app"]

log = logging.getLogger("wis2l_core.studio")

_CATALOG_TTL_S = 10.0
_MAX_FORM = 2 * 1024 * 1024


@attrs.define
class Studio:
    """The studio's state: the runtime, the cached catalog, the live feed, the CSRF token.

    Attributes:
        wis: a started ``Wis2l``.
        write: whether create, update and delete are allowed.
        live: the live feed (started and stopped by whoever serves the app).
        csrf_token: the per-process token every form carries (synchronizer token).
    """

    wis: Any
    write: bool = False
    live: LiveFeed | None = None
    csrf_token: str = attrs.field(factory=lambda: secrets.token_urlsafe(32))
    _catalog: Catalog | None = None
    _loaded_at: float = 0.0

    async def catalog(self, *, fresh: bool = False) -> Catalog:
        """The catalog, re-read at most every few seconds (or now with ``fresh``)."""
        now = time.monotonic()
        if fresh or self._catalog is None or now - self._loaded_at > _CATALOG_TTL_S:
            self._catalog = await load_catalog(self.wis.database)
            self._loaded_at = now
        return self._catalog

    async def table(self, key: str) -> tuple[Catalog, Table]:
        """The table named ``key`` in the URL.

        Raises:
            NotFound: no such table (after re-reading the catalog).
        """
        catalog = await self.catalog()
        table = catalog.get(key)
        if table is None:
            catalog = await self.catalog(fresh=True)
            table = catalog.get(key)
        if table is None:
            raise NotFound(f"no table {key!r}")
        return catalog, table


_env = Environment(
    loader=PackageLoader("wis2l_core.studio", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["combine"] = lambda d, **kw: {**d, **kw}
_env.filters["keyonly"] = lambda query: urlencode([kv for kv in parse_qsl(query) if kv[0] == "k"])


def _page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    studio: Studio = request.app.state.studio
    body = _env.get_template(template).render(
        request=request,
        write=studio.write,
        csrf=studio.csrf_token,
        render=render,
        operators=OPERATORS,
        **context,
    )
    return HTMLResponse(body, status_code=status)


def _status_of(exc: Wis2lError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, InvalidTransition | Conflict):
        return 409
    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, ServiceUnavailable):
        return 503
    return 500


def _error(request: Request, exc: Wis2lError) -> HTMLResponse:
    return _page(request, "error.html", _status_of(exc), title=type(exc).__name__, message=str(exc))


def _filters(request: Request) -> list[Filter]:
    q = request.query_params
    cols, ops, vals = q.getlist("fc"), q.getlist("fo"), q.getlist("fv")
    if not (len(cols) == len(ops) and len(vals) in (0, len(cols))):
        raise ValidationError("filters are fc, fo and fv triples", field="filter")
    vals = vals or [""] * len(cols)
    return [Filter(c, o, v) for c, o, v in zip(cols, ops, vals, strict=True) if c]


async def index(request: Request) -> Response:
    studio: Studio = request.app.state.studio
    try:
        catalog = await studio.catalog(fresh=True)
        counts = {
            key: await count_rows(studio.wis.database, t) for key, t in catalog.tables.items()
        }
    except Wis2lError as exc:
        return _error(request, exc)
    health = await studio.wis.health()
    backlog: Any = None
    try:
        backlog = await studio.wis.relay.backlog()
    except Wis2lError as exc:
        backlog = exc
    return _page(
        request,
        "index.html",
        title="Overview",
        catalog=catalog,
        counts=counts,
        health=health,
        backlog=backlog,
        live=studio.live is not None,
    )


async def table_page(request: Request) -> Response:
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
        page = await fetch_page(
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
        return _error(request, exc)
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
    return _page(
        request,
        "table.html",
        title=table.key,
        catalog=catalog,
        table=table,
        page=page,
        count=count,
        filters=filters,
        sort=sort,
        desc=desc,
        base=base,
        first=bool(q.get("after")),
        elapsed_ms=elapsed_ms,
        editor=writes.editor(table),
    )


async def _row_context(
    studio: Studio, table: Table, catalog: Catalog, row: dict[str, Any]
) -> dict[str, Any]:
    db = studio.wis.database
    outgoing = []
    for fk in table.fks:
        ref = catalog.by_name(fk.ref_schema, fk.ref_table)
        value = row.get(fk.column)
        if ref is None or value is None:
            continue
        target = await fetch_related(db, ref, fk.ref_column, value, limit=1)
        outgoing.append((fk, ref, target[0] if target else None))
    incoming = []
    for fk in sorted(catalog.incoming(table), key=_related_order):
        src = catalog.by_name(fk.schema, fk.table)
        value = row.get(fk.ref_column)
        if src is None or value is None:
            continue
        rows = await fetch_related(db, src, fk.column, value, limit=_RELATED)
        incoming.append((fk, src, rows))
    ed = writes.editor(table)
    repo = getattr(studio.wis, ed.repo) if ed is not None else None
    update_fields = writes.fields(table, repo.update) if ed and ed.update and repo else []
    return {
        "outgoing": outgoing,
        "incoming": incoming,
        "editor": ed,
        "fields": update_fields,
        "related_limit": _RELATED,
    }


_RELATED = 10
# The platform's own order on a project's page; other tables follow by name.
_PREFERRED = ("components", "design_tokens", "builds", "deployments", "events")


def _related_order(fk: ForeignKey) -> tuple[int, str, str]:
    rank = _PREFERRED.index(fk.table) if fk.table in _PREFERRED else len(_PREFERRED)
    return rank, fk.table, fk.column


def _key(request: Request) -> list[str]:
    key = request.query_params.getlist("k")
    if not key:
        raise ValidationError("a row is named by ?k=<primary key>", field="k")
    return key


async def row_page(request: Request) -> Response:
    studio: Studio = request.app.state.studio
    try:
        catalog, table = await studio.table(request.path_params["table"])
        row = await fetch_row(studio.wis.database, table, _key(request))
        if row is None:
            raise NotFound(f"{table.key} has no row {', '.join(_key(request))}")
        context = await _row_context(studio, table, catalog, row)
    except Wis2lError as exc:
        return _error(request, exc)
    done = request.query_params.get("done")
    return _page(
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


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return False
    parts = urlsplit(origin)
    return f"{parts.scheme}://{parts.netloc}" == f"{request.url.scheme}://{request.url.netloc}"


async def _checked_form(request: Request) -> dict[str, str]:
    studio: Studio = request.app.state.studio
    if not studio.write:
        raise _Refused(403, "the studio is read-only: start it with --write to edit")
    if not _same_origin(request):
        raise _Refused(403, "cross-origin write refused (Origin does not match)")
    form = await _form(request)
    token = form.pop("csrf", "")
    if not hmac.compare_digest(token.encode(), studio.csrf_token.encode()):
        raise _Refused(403, "missing or wrong CSRF token: reload the page and try again")
    return form


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the studio's forms; no multipart)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        raise _Refused(415, "forms are sent as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            raise _Refused(413, f"form larger than {_MAX_FORM // 1024} KiB")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise _Refused(400, "form is not UTF-8") from exc
    return dict(pairs)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _refused(request: Request, exc: _Refused) -> HTMLResponse:
    return _page(request, "error.html", exc.status, title="Refused", message=str(exc))


async def row_update(request: Request) -> Response:
    studio: Studio = request.app.state.studio
    try:
        form = await _checked_form(request)
    except _Refused as exc:
        return _refused(request, exc)
    try:
        catalog, table = await studio.table(request.path_params["table"])
        row = await fetch_row(studio.wis.database, table, _key(request))
        if row is None:
            raise NotFound(f"{table.key} has no row {', '.join(_key(request))}")
    except Wis2lError as exc:
        return _error(request, exc)
    try:
        _, changed = await writes.apply_update(studio.wis, table, row, form)
    except Wis2lError as exc:
        context = await _row_context(studio, table, catalog, row)
        return _page(
            request,
            "row.html",
            _status_of(exc),
            title=f"{table.key} · {render.row_label(table, row)}",
            catalog=catalog,
            table=table,
            row=row,
            failure=(type(exc).__name__, str(exc)),
            form=form,
            show=writes.show,
            **context,
        )
    url = render.row_url(table, row) or f"/t/{table.key}"
    done = urlencode({"done": f"Updated {', '.join(changed)} through wis.{table.name}"})
    return RedirectResponse(f"{url}&{done}", status_code=303)


async def row_delete(request: Request) -> Response:
    studio: Studio = request.app.state.studio
    try:
        await _checked_form(request)
        _, table = await studio.table(request.path_params["table"])
        row = await fetch_row(studio.wis.database, table, _key(request))
        if row is None:
            raise NotFound(f"{table.key} has no row {', '.join(_key(request))}")
        await writes.apply_delete(studio.wis, table, row)
    except _Refused as exc:
        return _refused(request, exc)
    except Wis2lError as exc:
        return _error(request, exc)
    return RedirectResponse(f"/t/{table.key}?deleted=1", status_code=303)


async def new_row(request: Request) -> Response:
    studio: Studio = request.app.state.studio
    form: dict[str, str] = {}
    failure = None
    try:
        catalog, table = await studio.table(request.path_params["table"])
        ed = writes.editor(table)
        if ed is None or ed.create is None:
            raise ValidationError(f"{table.key}: rows are not created in the studio")
    except Wis2lError as exc:
        return _error(request, exc)
    repo = getattr(studio.wis, ed.repo)
    create_fields = writes.fields(table, getattr(repo, ed.create))
    status = 200
    if request.method == "POST":
        try:
            form = await _checked_form(request)
        except _Refused as exc:
            return _refused(request, exc)
        try:
            made = await writes.apply_create(studio.wis, table, form)
        except Wis2lError as exc:
            failure, status = (type(exc).__name__, str(exc)), _status_of(exc)
        else:
            url = render.row_url(table, {k: getattr(made, k) for k in table.pk})
            return RedirectResponse(f"{url}&done=Created", status_code=303)
    return _page(
        request,
        "new.html",
        status,
        title=f"New {table.key} row",
        catalog=catalog,
        table=table,
        fields=create_fields,
        form=form,
        failure=failure,
    )


async def live_stream(request: Request) -> Response:
    studio: Studio = request.app.state.studio
    if studio.live is None:
        return JSONResponse({"error": "no live feed"}, status_code=404)
    return StreamingResponse(
        studio.live.stream(request.is_disconnected),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def status(request: Request) -> Response:
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


def create_app(wis: Any, *, write: bool = False, live: LiveFeed | None = None) -> Starlette:
    """The studio as an ASGI app over a started ``Wis2l``.

    Args:
        wis: the runtime (its pool, repositories, relay and health are used).
        write: allow create, update and delete through the repositories.
        live: the live feed behind ``/live`` (``None``: no live panel).

    Returns:
        A Starlette app; ``app.state.studio`` is its :class:`Studio`.
    """
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
        middleware=[Middleware(_SecurityHeaders)],
    )
    app.state.studio = Studio(wis=wis, write=write, live=live)
    return app
