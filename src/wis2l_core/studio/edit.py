"""The write handlers (``wis2l studio --write``): forms to repository calls, guarded.

Every write needs the studio started with ``--write``, a request from the studio's own
pages (the one CSRF rule of :mod:`wis2l_core.asgi._origin` against :attr:`Studio.origins`:
``Origin``, else ``Sec-Fetch-Site``, else ``Referer``) and the per-process CSRF token the
forms carry (compared in constant time). The body is read as
``application/x-www-form-urlencoded`` (no multipart parser).
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from wis2l_core.asgi._origin import same_origin
from wis2l_core.errors import NotFound, ValidationError, Wis2lError
from wis2l_core.studio import render, writes
from wis2l_core.studio.pages import Studio, error_page, page, row_context, row_key, status_of
from wis2l_core.studio.queries import fetch_row

__all__ = ["new_row", "row_delete", "row_update"]

_MAX_FORM = 2 * 1024 * 1024


async def _checked_form(request: Request) -> dict[str, str]:
    studio: Studio = request.app.state.studio
    if not studio.write:
        raise _Refused(403, "the studio is read-only: start it with --write to edit")
    headers = request.headers
    if not same_origin(
        studio.origins,
        origin=headers.get("origin"),
        fetch_site=headers.get("sec-fetch-site"),
        referer=headers.get("referer"),
    ):
        raise _Refused(403, "cross-origin write refused: it does not come from the studio's pages")
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
    return page(request, "error.html", exc.status, title="Refused", message=str(exc))


async def row_update(request: Request) -> Response:
    """``repo.update`` with the changed fields; the repository's error shown on the row."""
    studio: Studio = request.app.state.studio
    try:
        form = await _checked_form(request)
    except _Refused as exc:
        return _refused(request, exc)
    try:
        catalog, table = await studio.table(request.path_params["table"])
        row = await fetch_row(studio.wis.database, table, row_key(request))
        if row is None:
            raise NotFound(f"{table.key} has no row {', '.join(row_key(request))}")
    except Wis2lError as exc:
        return error_page(request, exc)
    try:
        _, changed = await writes.apply_update(studio.wis, table, row, form)
    except Wis2lError as exc:
        context = await row_context(studio, table, catalog, row)
        return page(
            request,
            "row.html",
            status_of(exc),
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
    """``repo.delete`` of the row, then back to its table."""
    studio: Studio = request.app.state.studio
    try:
        await _checked_form(request)
        _, table = await studio.table(request.path_params["table"])
        row = await fetch_row(studio.wis.database, table, row_key(request))
        if row is None:
            raise NotFound(f"{table.key} has no row {', '.join(row_key(request))}")
        await writes.apply_delete(studio.wis, table, row)
    except _Refused as exc:
        return _refused(request, exc)
    except Wis2lError as exc:
        return error_page(request, exc)
    return RedirectResponse(f"/t/{table.key}?deleted=1", status_code=303)


async def new_row(request: Request) -> Response:
    """The create form (GET) and ``repo.create``/``upsert`` (POST)."""
    studio: Studio = request.app.state.studio
    form: dict[str, str] = {}
    failure = None
    try:
        catalog, table = await studio.table(request.path_params["table"])
        ed = writes.editor(table)
        if ed is None or ed.create is None:
            raise ValidationError(f"{table.key}: rows are not created in the studio")
    except Wis2lError as exc:
        return error_page(request, exc)
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
            failure, status = (type(exc).__name__, str(exc)), status_of(exc)
        else:
            url = render.row_url(table, {k: getattr(made, k) for k in table.pk})
            return RedirectResponse(f"{url}&done=Created", status_code=303)
    return page(
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
