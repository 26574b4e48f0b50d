"""Hostile input at the edges: event bodies off the wire, user fields, the studio's query
strings and cursors, and requests to ``health_app``.

Each property says what must come out of any input: a result that round-trips, or our
``ValidationError`` naming the culprit (a 400 page in the studio); never a driver or
parser exception, never a 500.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import AsyncIterator
from html import unescape
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import httpx
import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from tests.helpers import field_is
from tests.strategies import (
    INJECTIONS,
    domain_events,
    forged_cursors,
    header_lists,
    hostile_texts,
    http_methods,
    json_values,
    mutated_event_bodies,
    query_texts,
    url_paths,
    user_fields,
)
from tests.test_asgi import Runtime, call

from wis2l_core import Conflict, ValidationError
from wis2l_core.asgi import health_app
from wis2l_core.catalogue import CATALOGUE, DomainEvent, decode_event, encode_event
from wis2l_core.dev.seed import seed
from wis2l_core.health import HealthChecker
from wis2l_core.runtime import Wis2l
from wis2l_core.studio import create_app

# -- decode_event -------------------------------------------------------------------------


def decoded_or_refused(data: Any, cls: type[DomainEvent] | None = None) -> DomainEvent | None:
    """``decode_event(data, cls)``; ``None`` when it refused with a ValidationError.

    Anything else it raises fails the test. What it returns must round-trip.
    """
    try:
        event = decode_event(data, cls)
    except ValidationError as exc:
        field = exc.field
        assert field is None or isinstance(field, str)
        return None
    assert isinstance(event, cls or DomainEvent)
    assert decode_event(encode_event(event)) == event
    return event


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_are_refused(data: bytes) -> None:
    decoded_or_refused(data)


@given(json_values)
def test_any_json_decodes_or_is_refused_naming_the_culprit(value: Any) -> None:
    data = orjson.dumps(value)
    if not isinstance(value, dict):
        with pytest.raises(ValidationError, check=field_is("payload")):
            decode_event(data)
    elif value.get("type") not in CATALOGUE:
        with pytest.raises(ValidationError, check=field_is("type")):
            decode_event(data)
    else:
        decoded_or_refused(data)


@given(mutated_event_bodies(), st.booleans())
def test_a_mutated_event_decodes_or_is_refused(body: dict[str, Any], named: bool) -> None:
    cls = CATALOGUE.get(body.get("type")) if named and isinstance(body.get("type"), str) else None
    event = decoded_or_refused(body, cls)
    if event is not None:  # what was kept is what was sent
        wire = orjson.loads(encode_event(event))
        assert {k: body[k] for k in wire if k in body and k != "occurred_at"} == {
            k: v for k, v in wire.items() if k in body and k != "occurred_at"
        }
    decoded_or_refused(orjson.dumps(body), cls)  # the bytes path agrees
    assert (decoded_or_refused(orjson.dumps(body), cls) is None) is (event is None)


@pytest.mark.parametrize(
    ("field", "value"),
    [("version", None), ("version", 5), ("environment", None), ("environment", 1)],
)
def test_a_field_of_the_wrong_kind_is_refused_not_converted(field: str, value: Any) -> None:
    """``null`` for a text field was read as ``"None"`` (cattrs calls ``str(value)``)."""
    body = {
        "type": "deployment.started",
        "project_id": str(uuid.uuid4()),
        "id": str(uuid.uuid4()),
        "occurred_at": "2026-01-01T00:00:00Z",
        "deployment_id": str(uuid.uuid4()),
        "environment": "staging",
        "version": "1.0.0",
    }
    assert decode_event(body).version == "1.0.0"  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, check=field_is(field)):
        decode_event(body | {field: value})


@given(domain_events())
def test_valid_events_round_trip_as_bytes_text_and_mapping(event: DomainEvent) -> None:
    data = encode_event(event)
    for form in (data, data.decode(), orjson.loads(data)):
        assert decode_event(form) == event
        assert decode_event(form, type(event)) == event


# -- users --------------------------------------------------------------------------------

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
LIMITS = {"email": (3, 320), "name": (1, 200), "subject": (1, 255)}
"""users.create's rules (docs/models.md): text without NUL or lone surrogates, these
lengths, and an e-mail address with one @ and a dotted domain."""


SOMEONE = {"email": "someone@example.com", "name": "Someone", "subject": "someone"}


def storable(value: Any) -> bool:
    """Text PostgreSQL can hold: a ``str`` without NUL or lone surrogates."""
    return (
        isinstance(value, str)
        and "\x00" not in value
        and not any("\ud800" <= c <= "\udfff" for c in value)
    )


def acceptable(field: str, value: Any) -> bool:
    """The model: does ``users.create`` accept ``value`` for ``field``?"""
    low, high = LIMITS[field]
    return (
        storable(value)
        and low <= len(value) <= high
        and (field != "email" or bool(EMAIL.match(value)))
    )


@given(
    base=user_fields(),
    field=st.sampled_from(sorted(LIMITS)),
    value=hostile_texts | st.text(max_size=30).map(lambda s: f"{s}@x.io"),
)
@example(base=SOMEONE, field="name", value="a\x00b")  # NUL: PostgreSQL text cannot hold it
@example(base=SOMEONE, field="email", value="a\x00@b.io")  # NUL in a plausible address
@example(base=SOMEONE, field="subject", value="\ud800")  # a lone surrogate
@example(base=SOMEONE, field="name", value="é" * 201)  # one character too many
async def test_a_user_field_is_stored_verbatim_or_refused_by_name(
    wis: Wis2l, base: dict[str, Any], field: str, value: Any
) -> None:
    tag = uuid.uuid4().hex  # unique e-mail and subject across examples
    kwargs = {**base, "email": f"{tag}{base['email']}", "subject": f"{tag}{base['subject']}"}
    if field in ("email", "subject") and isinstance(value, str):
        value = f"{tag}{value}"
    kwargs[field] = value
    if not acceptable(field, value):
        with pytest.raises(ValidationError, check=field_is(field)):
            await wis.users.create(**kwargs)
        if field != "subject":
            assert await wis.users.find_by_subject(kwargs["subject"]) is None  # nothing written
        return
    user = await wis.users.create(**kwargs)
    assert getattr(user, field) == value
    assert await wis.users.find_by_id(user.id) == user
    assert await wis.users.find_by_email(kwargs["email"]) == user
    assert await wis.users.find_by_subject(kwargs["subject"]) == user


@given(fields=user_fields(), case=st.sampled_from([str.upper, str.lower, str.swapcase, str.title]))
async def test_find_by_email_ignores_case_and_the_unique_key_does_too(
    wis: Wis2l, fields: dict[str, Any], case: Any
) -> None:
    tag = uuid.uuid4().hex
    email = f"{tag}{fields['email']}"
    user = await wis.users.create(**{**fields, "email": email, "subject": tag})
    assert await wis.users.find_by_email(case(email)) == user
    with pytest.raises(Conflict, check=field_is("email")):
        await wis.users.create(**{**fields, "email": case(email), "subject": f"{tag}-2"})


@given(value=hostile_texts.filter(lambda v: not acceptable("email", v)))
async def test_find_by_email_refuses_what_is_not_an_address_by_name(wis: Wis2l, value: Any) -> None:
    if storable(value) and 1 <= len(value) <= 320:
        assert await wis.users.find_by_email(value) is None  # text: looked up, not found
        return
    with pytest.raises(ValidationError, check=field_is("email")):
        await wis.users.find_by_email(value)


# -- the studio's query strings and cursors -----------------------------------------------


@pytest.fixture
async def studio(wis: Wis2l) -> AsyncIterator[httpx.AsyncClient]:
    async with wis.transaction() as tx:
        await seed(tx)
    app = create_app(wis)
    transport = httpx.ASGITransport(app=app)  # an app exception fails the test
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:5555") as c:
        yield c


def studio_cursor(body: Any) -> str:
    """A cursor in the studio's format (base64 of JSON) around any body: a forgery."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


garbage_cursors = st.one_of(
    forged_cursors,
    st.integers(10, 5000).map(lambda n: studio_cursor(b"[" * n + b"]" * n)),  # deep JSON
    st.binary(max_size=60).map(studio_cursor),
)
"""Cursors that are not a cursor at all: refused as such."""

_short = st.text(max_size=40) | st.sampled_from(INJECTIONS)
well_formed_forgeries = st.one_of(
    st.fixed_dictionaries(
        {
            "s": st.none() | st.sampled_from(["status", "created_at", "id"]) | _short,
            "d": st.booleans() | json_values,
            "k": st.lists(json_values | _short, max_size=4),
        }
    ),
    # the studio's own shape around any key value: the column's type must refuse it
    st.builds(lambda v: {"s": None, "d": False, "k": [v]}, _short | st.none()),
).map(studio_cursor)
"""Cursors in the studio's format (unsigned: a position, not a secret) around any body."""


def assert_clean_page(r: httpx.Response, url: str) -> None:
    assert r.status_code in (200, 400), (url[:200], r.status_code)
    assert "Traceback" not in r.text


@given(after=garbage_cursors)
async def test_a_garbage_cursor_gets_a_400(studio: httpx.AsyncClient, after: str) -> None:
    r = await studio.get("/t/builds", params={"after": after})
    assert_clean_page(r, after)
    if after:
        assert r.status_code == 400, after[:200]
        assert "cursor" in unescape(r.text)


@given(after=well_formed_forgeries)
async def test_a_forged_cursor_gets_a_page_or_a_400(studio: httpx.AsyncClient, after: str) -> None:
    assert_clean_page(await studio.get("/t/builds", params={"after": after}), after)


@given(at=st.integers(0, 200), char=st.sampled_from("AZaz09-_=+/.%~ \x00é"))
async def test_a_garbled_real_cursor_never_fails_the_page(
    studio: httpx.AsyncClient, at: int, char: str
) -> None:
    first = await studio.get("/t/builds", params={"limit": 3})
    m = re.search(r'id="next" rel="next" href="([^"]+)"', first.text)
    assert m is not None
    after = dict(parse_qsl(urlsplit(unescape(m.group(1))).query))["after"]
    at %= len(after) + 1
    for garbled in (after[:at] + char + after[at + 1 :], after[:at], after + char * at):
        assert_clean_page(await studio.get("/t/builds", params={"after": garbled}), garbled)


@given(
    params=st.lists(
        st.tuples(
            st.sampled_from(["fc", "fo", "fv", "sort", "desc", "limit", "after"]), query_texts
        ),
        max_size=6,
    ),
    table=st.sampled_from(["builds", "projects", "events", "design_tokens"]) | query_texts,
)
async def test_any_query_string_gets_a_page_or_a_clear_error(
    studio: httpx.AsyncClient, params: list[tuple[str, str]], table: str
) -> None:
    while len(urlencode(params)) > 60_000:  # httpx refuses to send a query over 64 KiB
        params = params[:-1]
    r = await studio.get(f"/t/{quote(table, safe='')}", params=params)
    assert r.status_code in (200, 307, 400, 404), (table[:100], params, r.status_code)
    assert "Traceback" not in r.text


# -- health_app ---------------------------------------------------------------------------


def expected_route(path: str) -> str | None:
    """The model of health_app's routes: ``.../health``, ``.../health/live|ready``, and
    ``/live``, ``/ready`` at the root."""
    parts = [p for p in path.split("/") if p]
    if parts and parts[-1] == "health":
        return "report"
    if parts and parts[-1] in ("live", "ready") and (len(parts) == 1 or parts[-2] == "health"):
        return parts[-1]
    return None


@given(
    path=url_paths,
    method=http_methods,
    query=st.binary(max_size=200) | st.integers(1, 4).map(lambda n: b"q=" + b"x" * 16_384 * n),
    headers=header_lists,
)
async def test_health_app_answers_any_request_by_its_path_and_method_alone(
    path: str, method: str, query: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    app = health_app(Runtime(HealthChecker()))
    response = await call(app, path, method=method, query_string=query, headers=headers)
    plain = await call(app, path, method=method)  # the same without query or headers
    assert (response.status, response.headers.keys()) == (plain.status, plain.headers.keys())
    route = expected_route(path)
    if route != "report":  # the report's body carries its timing
        assert (response.headers, response.body) == (plain.headers, plain.body)
    status = 404 if route is None else 405 if method not in ("GET", "HEAD") else 200
    assert response.status == status, (path, method)
    if method == "HEAD":
        assert response.body == b""
        get = await call(app, path)
        assert response.headers.keys() == get.headers.keys()
    else:
        assert int(response.headers["content-length"]) == len(response.body)
        body = json.loads(response.body)
        if status == 200:
            assert body["status"] in ("alive", "ready", "ok")
    if status == 405:
        assert response.headers["allow"] == "GET, HEAD"
