"""One source per setting: each ``Settings`` field names its variable in its metadata, and
docs/configuration.md and the field docstrings agree with it.

The configuration page's tables with a ``field`` column are the reference: each variable
a field reads is a row naming that field, once; each variable a URL is built from
(``DATABASE_HOST``, ...) is a row without a field; nothing else is there. A default the
page shows, read back through ``Settings.from_env``, gives the real default.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import re
from pathlib import Path

import attrs
import pytest

from wis2l_core import ConfigError, Settings
from wis2l_core._urls import PART_VARIABLES

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
FIELDS = attrs.fields(Settings)
VARIABLE = {field.name: field.metadata["env"] for field in FIELDS}
CODE = re.compile(r"`([^`]+)`")


@attrs.frozen
class Row:
    line: int
    variable: str
    field: str
    default: str


def documented_rows() -> list[Row]:
    """The rows of the page's tables whose header has ``variable`` and ``field`` columns."""
    rows: list[Row] = []
    columns: list[str] = []
    for number, line in enumerate(PAGE.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("|"):
            columns = []
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not columns:
            columns = cells
            continue
        if set(cells) <= {"---"} or not {"variable", "field"} <= set(columns):
            continue
        cell = dict(zip(columns, cells, strict=False))
        variable = CODE.fullmatch(cell["variable"])
        assert variable is not None, f"line {number}: the variable is not `NAME`"
        field = CODE.fullmatch(cell["field"])
        rows.append(Row(number, variable[1], field[1] if field else "", cell.get("default", "")))
    return rows


ROWS = documented_rows()


def test_every_field_names_one_variable_of_its_own() -> None:
    assert all(isinstance(v, str) and v for v in VARIABLE.values()), VARIABLE
    assert len(set(VARIABLE.values())) == len(VARIABLE), VARIABLE
    assert not set(VARIABLE.values()) & set(PART_VARIABLES)


def test_the_page_documents_each_variable_once() -> None:
    assert len(ROWS) > len(FIELDS)  # the tables were found
    seen: dict[str, int] = {}
    for row in ROWS:
        assert row.variable not in seen, (
            f"{row.variable} is documented on lines {seen[row.variable]} and {row.line}"
        )
        seen[row.variable] = row.line


def test_the_page_documents_exactly_the_fields_variables() -> None:
    documented = {row.variable: row.field for row in ROWS if row.field}
    assert documented == {variable: field for field, variable in VARIABLE.items()}


def test_the_page_documents_exactly_the_url_parts() -> None:
    assert sorted(row.variable for row in ROWS if not row.field) == sorted(PART_VARIABLES)


@pytest.mark.parametrize("row", [r for r in ROWS if r.default], ids=lambda r: r.variable)
def test_the_default_shown_is_the_real_one(row: Row) -> None:
    if row.default.lower().startswith("none"):
        field = getattr(FIELDS, row.field)
        assert not field.default, f"{row.variable}: the page says none, the field has {field}"
        return
    shown = CODE.match(row.default)
    assert shown is not None, f"line {row.line}: a default is `text` or none: {row.default!r}"
    assert Settings.from_env({row.variable: shown[1]}) == Settings(), (
        f"{row.variable}={shown[1]} (the page's default) is not the default"
    )


@pytest.mark.parametrize("field", [f.name for f in FIELDS])
def test_each_field_is_read_from_its_variable(field: str) -> None:
    variable = VARIABLE[field]
    try:
        value = getattr(Settings.from_env({variable: "zz-9"}), field)
    except ConfigError as exc:
        named = exc.variable
    else:  # read, unless the field kept its default
        named = variable if value != getattr(Settings(), field) else None
    assert named == variable


def field_docstrings() -> dict[str, str]:
    (cls,) = ast.parse(inspect.getsource(Settings)).body
    assert isinstance(cls, ast.ClassDef)
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(cls.body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
        ):
            docs[node.target.id] = str(after.value.value)
    return docs


def test_each_field_docstring_names_its_own_variable_only() -> None:
    docs = field_docstrings()
    assert docs.keys() == VARIABLE.keys()
    known = {*VARIABLE.values(), *PART_VARIABLES}
    for field, text in docs.items():
        named = {name for name in re.findall(r"``([A-Z][A-Z0-9_]*)``", text) if name in known}
        assert named == {VARIABLE[field]}, f"{field}'s docstring names {named}"
