"""The event catalogue: wire round trips, decoding errors, AsyncAPI, and docs/events.md.

``WIS2L_UPDATE_DOCS=1 pytest tests/test_events_catalogue.py`` rewrites the generated part
of docs/events.md.
"""

from __future__ import annotations

import json
import os
import typing
import uuid
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from wis2l_core.catalogue import event_payload, field_docs
from wis2l_core.cli import main
from wis2l_core.db.repository import event_params
from wis2l_core.errors import ValidationError
from wis2l_core.events import (
    CATALOGUE,
    BuildCompleted,
    BuildProgress,
    ComponentCreated,
    DomainEvent,
    asyncapi_document,
    decode_event,
    encode_event,
    event_class,
)
from wis2l_core.events.asyncapi import event_schema, to_yaml
from wis2l_core.models import Language

DOCS = Path(__file__).resolve().parents[1] / "docs" / "events.md"
START, END = "<!-- catalogue:start -->", "<!-- catalogue:end -->"


INT32 = st.integers(-(2**31), 2**31 - 1)  # the database's integer columns
ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)


def _strategy(cls: type[DomainEvent]) -> st.SearchStrategy[DomainEvent]:
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {
        f.name: INT32 if hints[f.name] is int else st.from_type(hints[f.name])
        for f in attrs.fields(cls)
    }
    fields["occurred_at"] = st.datetimes(timezones=ZONES)
    if cls is BuildCompleted:
        fields["artifacts"] = st.dictionaries(st.text(), INT32 | st.text())
    return st.builds(cls, **fields)


@given(st.one_of([_strategy(cls) for cls in CATALOGUE.values()]))
def test_every_event_round_trips_through_the_wire(event: DomainEvent) -> None:
    data = encode_event(event)
    assert decode_event(data) == event
    assert decode_event(data, type(event)) == event
    assert json.loads(data)["type"] == event.type
    assert set(json.loads(data)) == set(field_docs(type(event)))  # documented, no more
    # the outbox stores the same wire JSON (payload column)
    assert event_params(event)["payload"].obj == event_payload(event)


def test_catalogue_matches_the_design() -> None:
    assert sorted(CATALOGUE) == sorted(
        f"{entity}.{action}"
        for entity, actions in {
            "component": ("created", "updated", "deleted"),
            "build": ("started", "progress", "completed", "failed"),
            "deployment": ("started", "completed", "failed"),
            "token": ("updated", "deleted", "synced"),
            "user": ("created", "signed_in", "role_changed"),
        }.items()
        for action in actions
    )
    assert event_class("token.synced").__name__ == "TokensSynced"
    p = uuid.uuid4()
    event = BuildProgress(project_id=p, build_id=p, progress=3)
    assert event.subject() == "wis2l.build.progress"
    assert event.subject("acme") == "acme.build.progress"
    assert event.id.version == 7
    assert event.occurred_at.utcoffset() is not None


@pytest.mark.parametrize(
    ("data", "field", "cls"),
    [
        (b"{oops", "payload", None),
        (b"[1]", "payload", None),
        (b'{"type": "nope.nope"}', "type", None),
        (b'{"type": "build.failed"}', "type", BuildProgress),
        (b"{}", "type", None),  # no class given and no type: nothing names it
        (b'{"type": "build.progress", "project_id": "x"}', "project_id", None),
    ],
)
def test_bad_messages_raise_validation_error(
    data: bytes, field: str, cls: type[DomainEvent] | None
) -> None:
    with pytest.raises(ValidationError) as exc:
        decode_event(data, cls)
    assert exc.value.field == field


def test_a_body_without_type_decodes_when_the_class_is_given() -> None:
    p = uuid.uuid4()
    event = BuildProgress(project_id=p, build_id=p, progress=3)
    body = event_payload(event)
    del body["type"]
    assert decode_event(orjson.dumps(body), BuildProgress) == event
    with pytest.raises(ValidationError) as exc:
        decode_event(orjson.dumps(body))  # nothing names the type
    assert exc.value.field == "type"


def test_field_docs_come_from_the_attributes_sections() -> None:
    docs = field_docs(BuildProgress)
    assert list(docs) == ["id", "type", "occurred_at", "project_id", "build_id", "progress"]
    assert docs["progress"] == "Percent done, 0 to 100."
    # a description wrapped over two lines reads as one
    assert docs["id"].startswith("Unique per event, a UUID (v7 when made here); also the")
    assert "\n" not in docs["id"]
    assert "header, so JetStream drops a repeat" in docs["id"]


def _module_imports(module: str) -> set[str]:
    """The modules ``module`` imports at its top level (not inside functions)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module)
    assert spec is not None
    assert spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_the_catalogue_imports_no_io_library() -> None:
    """The catalogue and everything of ours it imports stay free of nats, psycopg, redis
    (and griffe, which only the schema needs, imported on first use)."""
    seen: set[str] = set()
    todo = ["wis2l_core.catalogue"]
    while todo:
        module = todo.pop()
        seen.add(module)
        for name in _module_imports(module):
            assert name.split(".")[0] not in {"nats", "psycopg", "redis", "griffe"}, module
            if name.startswith("wis2l_core.") and name not in seen:
                todo.append(name)
    assert "wis2l_core.serde" in seen  # the walk followed our own imports


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    p = uuid.uuid4()
    event = BuildProgress(project_id=p, build_id=p, progress=3)
    body = event_payload(event) | {"eta_s": 12}
    assert decode_event(orjson.dumps(body)) == event


def test_every_field_is_documented() -> None:
    for cls in CATALOGUE.values():
        docs = field_docs(cls)
        assert set(docs) == {f.name for f in attrs.fields(cls)} | {"type"}, cls
        assert all(docs.values()), cls


def test_asyncapi_document_is_generated_from_the_classes() -> None:
    doc = asyncapi_document("acme")
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc["channels"]) == {c.__name__ for c in CATALOGUE.values()} | {"DeadLetter"}
    assert doc["channels"]["BuildProgress"]["address"] == "acme.build.progress"
    assert doc["channels"]["DeadLetter"]["address"] == "acme.dlq.{subject}"
    for name, op in doc["operations"].items():
        ref = op["channel"]["$ref"].removeprefix("#/channels/")
        assert ref in doc["channels"], name
    schema = doc["components"]["schemas"]["DeploymentCompleted"]
    assert schema["properties"]["url"]["type"] == ["string", "null"]
    assert schema["properties"]["environment"]["enum"] == ["staging", "production"]
    assert schema["properties"]["type"]["const"] == "deployment.completed"
    assert schema["required"][:4] == ["id", "type", "occurred_at", "project_id"]
    assert event_schema(BuildCompleted)["properties"]["artifacts"]["type"] == "object"


def test_yaml_rendering_keeps_order_and_values() -> None:
    data = {"z": {"b": [1, {"c": "x: y"}], "e": []}, "on": None, "k-1": "é", "v": "3.0.0"}
    text = to_yaml(data)
    assert yaml.safe_load(text) == data  # "on", "x: y" and "3.0.0" stay strings
    assert list(yaml.safe_load(text)) == ["z", "on", "k-1", "v"]  # not sorted
    assert "é" in text


def test_the_asyncapi_yaml_is_the_json_document() -> None:
    doc = asyncapi_document("acme")
    assert yaml.safe_load(to_yaml(doc)) == doc


def test_cli_schema_prints_json_and_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "schema", "--namespace", "acme"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == asyncapi_document("acme")
    assert main(["events", "schema", "--yaml", "--namespace", "acme"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("asyncapi: 3.0.0\n")
    assert yaml.safe_load(out) == doc
    assert yaml.safe_load(out)["channels"]["TokensSynced"]["address"] == "acme.token.synced"


# -- docs/events.md ----------------------------------------------------------------------


def _json_type(schema: dict[str, Any]) -> str:
    kinds = schema.get("type")
    names = kinds if isinstance(kinds, list) else [kinds]
    text = " or ".join(str(n) for n in names if n)
    if "format" in schema:
        text = text.replace(str(names[0]), f"{names[0]} ({schema['format']})", 1)
    if "enum" in schema:
        text += ": " + ", ".join(f'`"{v}"`' for v in schema["enum"])
    if "const" in schema:
        text += f': `"{schema["const"]}"`'
    return text


COMMON = ("id", "type", "occurred_at", "project_id")


def _rows(props: dict[str, Any]) -> list[str]:
    rows = ["| field | JSON type | description |", "|---|---|---|"]
    for name, prop in props.items():
        desc = prop["description"].replace("|", "\\|")
        rows.append(f"| `{name}` | {_json_type(prop)} | {desc} |")
    return rows


def catalogue_markdown() -> str:
    """The generated reference: the common fields, then each event's own, field by field."""
    first = event_schema(next(iter(CATALOGUE.values())))["properties"]
    common = {k: dict(first[k]) for k in COMMON}
    common["type"].pop("const")
    out = [START, "", "### Common fields", "", "Every event has these four:", ""]
    out += [*_rows(common), ""]
    for cls in CATALOGUE.values():
        schema = event_schema(cls)
        own = {k: v for k, v in schema["properties"].items() if k not in COMMON}
        out += [
            f"### {cls.__name__}",
            "",
            f'Subject `wis2l.{cls.type}`, `type` `"{cls.type}"`. {schema["description"]}',
            "",
            *_rows(own),
            "",
        ]
    out.append(END)
    return "\n".join(out)


def test_docs_events_md_is_current() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert START in text
    assert END in text
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    fresh = head + catalogue_markdown() + tail
    if os.environ.get("WIS2L_UPDATE_DOCS") == "1":
        DOCS.write_text(fresh, encoding="utf-8")
    assert text == fresh, "docs/events.md is stale: WIS2L_UPDATE_DOCS=1 pytest " + __file__


def test_attrs_fields_are_frozen() -> None:
    p = uuid.uuid4()
    event = BuildProgress(project_id=p, build_id=p, progress=1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.progress = 2  # type: ignore[misc]


def test_an_event_is_checked_as_it_is_built() -> None:
    """bus.publish no longer decodes each event again: the check is at construction."""
    p = uuid.uuid4()
    with pytest.raises(ValidationError) as exc:
        BuildProgress(project_id=p, build_id="not a uuid", progress=1)  # type: ignore[arg-type]
    assert exc.value.field == "build_id"
    with pytest.raises(ValidationError) as exc:
        ComponentCreated(  # not one of the Language values
            project_id=p,
            component_id=p,
            name="x",
            language="cobol",
            version=1,  # type: ignore[arg-type]
        )
    assert exc.value.field == "language"
    with pytest.raises(ValidationError) as exc:
        attrs.evolve(BuildProgress(project_id=p, build_id=p, progress=1), progress="many")
    assert exc.value.field == "progress"
    # What a consumer reads back is accepted, and kept in its decoded form.
    event = ComponentCreated(
        project_id=str(p),
        component_id=p,
        name="x",
        language="lua",
        version=1,  # type: ignore[arg-type]
    )
    assert event.project_id == p
    assert event.language is Language.LUA
    assert decode_event(encode_event(event)) == event
