"""What every studio page shares: the state, the templates, error pages, a row's context.

The read pages live in ``studio.app``, the write handlers in ``studio.edit``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import attrs
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

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
from wis2l_core.studio.hosts import host_names, origins
from wis2l_core.studio.live import LiveFeed
from wis2l_core.studio.queries import OPERATORS, fetch_related

__all__ = ["Studio", "error_page", "page", "row_context", "row_key", "status_of"]

_CATALOG_TTL_S = 10.0
_RETRY_S = 5


@attrs.define
class Studio:
    """The studio's state: the runtime, the cached catalog, the live feed, the CSRF token.

    Attributes:
        wis: a started ``Wis2l``.
        write: whether create, update and delete are allowed.
        live: the live feed (started and stopped by whoever serves the app).
        csrf_token: the per-process token every form carries (synchronizer token).
        hosts: the ``Host`` values answered (see :meth:`serve_on`); none until then.
        origins: the origins a write may come from (the pages under :attr:`hosts`).
    """

    wis: Any
    write: bool = False
    live: LiveFeed | None = None
    csrf_token: str = attrs.field(factory=lambda: secrets.token_urlsafe(32))
    hosts: frozenset[str] = frozenset()
    origins: frozenset[str] = frozenset()
    _catalog: Catalog | None = None
    _loaded_at: float = 0.0

    def serve_on(self, host: str, port: int) -> None:
        """Answer to the names of ``host:port`` (and loopback's), and take writes only
        from pages there (see ``studio.hosts``)."""
        self.hosts = host_names(host, port)
        self.origins = origins(self.hosts)

    async def catalog(self, *, fresh: bool = False) -> Catalog:
        """The catalog, re-read at most every few seconds (or now with ``fresh``)."""
        now = time.monotonic()
        if fresh or self._catalog is None or now - self._loaded_at > _CATALOG_TTL_S:
            self._catalog = await load_catalog(self.wis.database)
            self._loaded_at = now
        return self._catalog

    @property
    def last_catalog(self) -> Catalog | None:
        """The catalog last read, however old (``None`` before the first read)."""
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


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` with the studio's common context (mode, CSRF token, helpers)."""
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


def status_of(exc: Wis2lError) -> int:
    """The HTTP status a library error is shown with (404, 409, 400, 503, else 500)."""
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, InvalidTransition | Conflict):
        return 409
    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, ServiceUnavailable):
        return 503
    return 500


def error_page(request: Request, exc: Wis2lError) -> HTMLResponse:
    """A page naming the error and its message, with its status and the navigation (from
    the catalog last read: no I/O), never a traceback. The database out of reach is a 503
    page saying so, which reloads itself every few seconds."""
    studio: Studio = request.app.state.studio
    common: dict[str, Any] = {"catalog": studio.last_catalog}
    if isinstance(exc, ServiceUnavailable) and exc.service == "database":
        response = page(
            request,
            "unavailable.html",
            503,
            title="Database unreachable",
            detail=str(exc),
            retry_s=_RETRY_S,
            **common,
        )
        response.headers["retry-after"] = str(_RETRY_S)
        return response
    return page(
        request,
        "error.html",
        status_of(exc),
        title=type(exc).__name__,
        message=str(exc),
        **common,
    )


async def row_context(
    studio: Studio, table: Table, catalog: Catalog, row: dict[str, Any]
) -> dict[str, Any]:
    """What a row page shows besides the row: the rows it refers to (foreign keys up),
    the first rows referring to it (down), and its edit form's fields."""
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


def row_key(request: Request) -> list[str]:
    """The row's primary-key values from ``?k=`` (one per key column, in order).

    Raises:
        ValidationError: no ``k`` given.
    """
    key = request.query_params.getlist("k")
    if not key:
        raise ValidationError("a row is named by ?k=<primary key>", field="k")
    return key
