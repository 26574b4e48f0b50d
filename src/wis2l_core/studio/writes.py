"""Create, update and delete through the repositories (``wis2l studio --write``).

The studio never writes SQL of its own: a form becomes keyword arguments of the table's
repository method (``wis.builds.update(id, status=...)``), so validation, status machines,
version bumps and events happen exactly as in code. Form fields are the method's own
parameters; each is read with its column's type (JSON for ``jsonb``, integers, comma lists
for arrays). An update sends only the fields whose text changed.
"""

from __future__ import annotations

import enum
import inspect
import json
from collections.abc import Mapping
from typing import Any

import attrs

from wis2l_core import models
from wis2l_core.errors import ValidationError
from wis2l_core.studio.catalog import Column, Table

__all__ = ["EDITORS", "Editor", "Field", "apply_create", "apply_delete", "apply_update", "fields"]


@attrs.frozen
class Editor:
    """How a table is written: its repository attribute and method names."""

    repo: str
    create: str | None = "create"
    update: bool = True
    delete: bool = True


EDITORS: dict[str, Editor] = {
    "users": Editor("users"),
    "templates": Editor("templates"),
    "projects": Editor("projects"),
    "components": Editor("components"),
    "design_tokens": Editor("tokens", create="upsert", update=False),
    "builds": Editor("builds"),
    "deployments": Editor("deployments"),
    "events": Editor("events", update=False, delete=False),
}
"""The library's tables (schema ``public``); other tables are shown read-only."""

_COLUMN_OF = {"group": "group_name"}
_ENUMS: dict[str, type[enum.StrEnum]] = {
    "role": models.Role,
    "engine": models.Engine,
    "language": models.Language,
    "category": models.TokenCategory,
    "environment": models.Environment,
    "subsystem": models.Subsystem,
}
_STATUS: dict[str, type[enum.StrEnum]] = {
    "builds": models.BuildStatus,
    "deployments": models.DeploymentStatus,
}


@attrs.frozen
class Field:
    """A form field: a repository parameter, its column (if any) and its choices."""

    name: str
    required: bool
    column: Column | None
    choices: tuple[str, ...] = ()

    @property
    def multiline(self) -> bool:
        """JSON and long text get a textarea."""
        return self.column is not None and (
            self.column.is_json or self.name in ("code", "description", "prompt", "log")
        )


def editor(table: Table) -> Editor | None:
    """The table's editor, or ``None`` (not a library table: read-only)."""
    return EDITORS.get(table.name) if table.schema == "public" else None


def fields(table: Table, method: Any) -> list[Field]:
    """The form fields of a repository ``method``, in its parameter order."""
    out = []
    for p in inspect.signature(method).parameters.values():
        if p.name == "id" or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        column = table.column(_COLUMN_OF.get(p.name, p.name))
        kind = _STATUS.get(table.name) if p.name == "status" else _ENUMS.get(p.name)
        choices = tuple(m.value for m in kind) if kind is not None else ()
        out.append(Field(p.name, p.default is p.empty, column, choices))
    return out


def show(field: Field, value: Any) -> str:
    """A stored value as the text its form field starts with."""
    if value is None:
        return ""
    if field.column is not None and field.column.is_json:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def parse(field: Field, text: str) -> Any:
    """The form's text for ``field`` as the repository's argument.

    Raises:
        ValidationError: not JSON for a JSON column, not an integer for an integer one.
    """
    col = field.column
    if text.strip() == "" and (col is None or not col.notnull or not field.required):
        return None
    if col is None:
        return text
    if col.is_json:
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValidationError(
                f"{field.name}: not valid JSON ({exc})", field=field.name
            ) from exc
    if col.base in ("int2", "int4", "int8"):
        try:
            return int(text)
        except ValueError as exc:
            raise ValidationError(f"{field.name}: not an integer", field=field.name) from exc
    if col.base.startswith("_"):
        return [part.strip() for part in text.split(",") if part.strip()]
    if col.base == "bool":
        return text.lower() in ("true", "on", "1", "yes")
    return text


def _repo(wis: Any, table: Table) -> tuple[Editor, Any]:
    ed = editor(table)
    if ed is None:
        raise ValidationError(f"{table.key} is not a library table: it is read-only here")
    return ed, getattr(wis, ed.repo)


async def apply_update(
    wis: Any, table: Table, row: dict[str, Any], form: Mapping[str, str]
) -> tuple[Any, list[str]]:
    """Call ``repo.update(id, **changed)``; return the result and the fields sent.

    Raises:
        ValidationError: a field did not parse, nothing changed, or no update exists.
        Wis2lError: whatever the repository raises (``InvalidTransition``, ``Conflict`` ...).
    """
    ed, repo = _repo(wis, table)
    if not ed.update:
        raise ValidationError(f"{table.key} rows are not updated in place")
    changes: dict[str, Any] = {}
    for f in fields(table, repo.update):
        if f.name not in form:
            continue
        text = form[f.name].replace("\r\n", "\n")
        current = show(f, row.get(f.column.name)) if f.column is not None else ""
        if text != current:
            value = parse(f, text)
            if value is None and f.column is None:
                continue
            changes[f.name] = value
    if not changes:
        raise ValidationError("nothing changed")
    return await repo.update(row["id"], **changes), sorted(changes)


async def apply_create(wis: Any, table: Table, form: Mapping[str, str]) -> Any:
    """Call the table's ``create`` (or ``upsert``) with the form's non-empty fields.

    Raises:
        ValidationError: a field did not parse, or the table cannot be created into.
        Wis2lError: whatever the repository raises.
    """
    ed, repo = _repo(wis, table)
    if ed.create is None:
        raise ValidationError(f"{table.key} rows are not created here")
    method = getattr(repo, ed.create)
    args: dict[str, Any] = {}
    for f in fields(table, method):
        text = form.get(f.name, "")
        if text.strip() == "" and not f.required:
            continue
        args[f.name] = parse(f, text)
    return await method(**args)


async def apply_delete(wis: Any, table: Table, row: dict[str, Any]) -> bool:
    """Delete ``row`` through its repository.

    Raises:
        ValidationError: the table's rows are not deleted here.
    """
    ed, repo = _repo(wis, table)
    if not ed.delete:
        raise ValidationError(f"{table.key} rows are not deleted here (an audit log)")
    if table.name == "design_tokens":
        return bool(await repo.delete(row["project_id"], row["name"]))
    return bool(await repo.delete(row["id"]))
