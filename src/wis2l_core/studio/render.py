"""How a value looks in the studio: I/O-free, HTML-escaped, one function per kind.

The platform's data is shown as its users think of it: colour tokens as swatches, a build's
progress as a bar, statuses as badges, URLs as links, JSON folded in ``<details>``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup
from markupsafe import escape as _e

from wis2l_core.studio.catalog import Catalog, Column, Table

__all__ = ["cell", "color_of", "row_label", "row_url", "table_url"]

# The PICO-8 palette: the seed's pico8 colour tokens are palette indexes.
_PICO8 = (
    "#000000", "#1d2b53", "#7e2553", "#008751", "#ab5236", "#5f574f", "#c2c3c7", "#fff1e8",
    "#ff004d", "#ffa300", "#ffec27", "#00e436", "#29adff", "#83769c", "#ff77a8", "#ffccaa",
)  # fmt: skip
_COLOR = re.compile(r"^(#[0-9a-fA-F]{3,8}|(rgb|rgba|hsl|hsla)\([0-9.,%\s/]+\))$")
_LABELS = ("name", "slug", "email", "title", "target", "version", "type", "subject")
_TEXT_MAX = 120


def table_url(table: Table, **query: Any) -> str:
    """The URL of ``table``'s page, with query parameters (``None`` values dropped)."""
    params = {k: v for k, v in query.items() if v is not None}
    return f"/t/{table.key}" + (f"?{urlencode(params, doseq=True)}" if params else "")


def row_url(table: Table, row: dict[str, Any]) -> str | None:
    """The URL of ``row``'s page, or ``None`` when ``table`` has no primary key."""
    if not table.pk:
        return None
    return f"/t/{table.key}/row?" + urlencode([("k", str(row[k])) for k in table.pk])


def row_label(table: Table, row: dict[str, Any]) -> str:
    """A human name for ``row``: its name, slug, email ... else its key."""
    for name in _LABELS:
        if table.column(name) is not None and row.get(name):
            return str(row[name])
    return ", ".join(str(row[k]) for k in table.pk) if table.pk else "row"


def color_of(value: Any) -> str | None:
    """A CSS colour for a colour token's value, or ``None`` if it is not one.

    Accepts ``#rgb``/``#rrggbb(aa)``, ``rgb()``/``hsl()`` strings, ``{"hex": ...}`` objects
    and PICO-8 palette indexes (0..15). Anything else is refused, so nothing but a colour
    reaches the ``style`` attribute.
    """
    if isinstance(value, dict):
        value = value.get("hex") or value.get("value")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(_PICO8):
        return _PICO8[value]
    if isinstance(value, str) and _COLOR.match(value.strip()):
        return value.strip()
    return None


def _short(value: Any) -> str:
    """A key short enough for a table cell: UUIDs by their last 8 hex digits (UUIDv7s of
    one period share their first ones)."""
    text = value.isoformat() if isinstance(value, dt.datetime) else str(value)
    return "…" + text[-8:] if len(text) > 12 and "-" in text else text


def _html(built: str) -> Markup:
    """Mark ``built`` safe: only for f-strings whose every value went through ``_e``."""
    return Markup(built)  # noqa: S704 - the callers escape each interpolated value


def _json(value: Any) -> Markup:
    text = _e(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str))
    if isinstance(value, dict):
        summary = f"{{…}} {len(value)} key{'s' if len(value) != 1 else ''}"
    elif isinstance(value, list):
        summary = f"[…] {len(value)} item{'s' if len(value) != 1 else ''}"
    else:
        return _html(f"<code>{text}</code>")
    return _html(f'<details class="json"><summary>{summary}</summary><pre>{text}</pre></details>')


def _time(value: dt.datetime, *, full: bool) -> Markup:
    """In full on a row page; to the minute in a list (``Z`` for UTC), the full value in
    its tooltip, so that a table of timestamps fits the page."""
    whole = value.isoformat(sep=" ", timespec="seconds")
    if full:
        return _html(f'<time datetime="{value.isoformat()}">{whole}</time>')
    offset = value.utcoffset()
    zone = "" if offset is None else "Z" if not offset else value.strftime("%z")
    return _html(
        f'<time datetime="{value.isoformat()}" title="{whole}">'
        f"{value.strftime('%Y-%m-%d %H:%M')}{zone}</time>"
    )


def _text(value: Any) -> Markup:
    if isinstance(value, dt.datetime):
        return _time(value, full=False)
    text = str(value) if not isinstance(value, list) else ", ".join(map(str, value))
    if len(text) > _TEXT_MAX:
        return _html(f'<span title="{_e(text[:2000])}">{_e(text[:_TEXT_MAX])}…</span>')
    return _e(text)


def _link(url: str | None, value: Any) -> Markup:
    return _html(f'<a href="{_e(url)}" title="{_e(value)}">{_e(_short(value))}</a>')


def cell(
    catalog: Catalog, table: Table, column: Column, row: dict[str, Any], *, full: bool = False
) -> Markup:
    """``row[column]`` as HTML for a table page (``full``: the row page, no truncation).

    Every value is escaped (f-strings around :func:`markupsafe.escape`: this runs for
    every cell of a page, and ``Markup.format`` costs several times more).
    """
    value = row.get(column.name)
    name = column.name
    if value is None:
        return Markup('<span class="null">NULL</span>')
    if column.is_json:
        if table.name == "design_tokens" and name == "value" and row.get("category") == "color":
            color = color_of(value)
            if color is not None:
                return _html(
                    f'<span class="swatch" style="background:{_e(color)}"></span> '
                    f"{_e(json.dumps(value))}"
                )
        return _json(value)
    if name in table.pk and not full:
        return _link(row_url(table, row), value)
    fk = next((f for f in table.fks if f.column == name), None)
    if fk is not None:
        ref = catalog.by_name(fk.ref_schema, fk.ref_table)
        if ref is not None and ref.pk == (fk.ref_column,):
            return _link(row_url(ref, {fk.ref_column: value}), value)
    if name == "progress" and isinstance(value, int):
        return _html(f'<progress max="100" value="{value}"></progress> {value}%')
    if name == "status" and isinstance(value, str):
        v = _e(value)
        return _html(f'<span class="badge status-{v}">{v}</span>')
    if name == "url" and isinstance(value, str) and value.startswith(("https://", "http://")):
        v = _e(value)
        return _html(f'<a href="{v}" target="_blank" rel="noopener noreferrer">{v}</a>')
    if full:
        if isinstance(value, str) and ("\n" in value or len(value) > _TEXT_MAX):
            return _html(f"<pre>{_e(value)}</pre>")
        return _e(value) if not isinstance(value, dt.datetime) else _time(value, full=True)
    return _text(value)
