"""Hypothesis strategies for every model's inputs: valid ones and ones the library refuses.

Valid strategies produce values a repository must store and read back unchanged. The
``bad_*`` strategies produce ``(kwargs, field)``: keyword arguments with exactly one field
wrong, and the ``ValidationError.field`` expected for it. Parents (owner, project, build)
must exist, so the strategies take their ids as arguments.

Limits mirror the schema and the ``check_*`` helpers: names 1..200, slugs ``^[a-z0-9]+
(-[a-z0-9]+)*$`` up to 64, descriptions up to 10,000, build targets and deployment versions
1..100, URLs up to 2048, progress 0..100, JSON without NUL characters and with integers in
64 bits.
"""

from __future__ import annotations

import base64
import string
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import orjson
from hypothesis import strategies as st

from wis2l_core.catalogue import (
    BuildCompleted,
    BuildFailed,
    BuildProgress,
    BuildStarted,
    ComponentCreated,
    ComponentDeleted,
    ComponentUpdated,
    DeploymentCompleted,
    DeploymentFailed,
    DeploymentStarted,
    DomainEvent,
    TokensSynced,
    TokenUpdated,
    encode_event,
)
from wis2l_core.models import (
    BuildStatus,
    DeploymentStatus,
    Engine,
    Environment,
    Language,
    Role,
    Subsystem,
    TokenCategory,
)

Kwargs = dict[str, Any]

# -- building blocks ---------------------------------------------------------------------

# Any character PostgreSQL text can hold: no NUL, no lone surrogate (codec="utf-8").
_chars = st.characters(codec="utf-8", exclude_characters="\x00")


def texts(min_size: int = 1, max_size: int = 200) -> st.SearchStrategy[str]:
    """Valid text: no NUL byte, ``min_size..max_size`` characters (kept short by default)."""
    return st.text(_chars, min_size=min_size, max_size=max_size)


def optional_texts(max_size: int = 200) -> st.SearchStrategy[str | None]:
    """``None`` or text (empty allowed), as for descriptions and prompts."""
    return st.none() | texts(0, max_size)


_slug_word = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8)
slugs: st.SearchStrategy[str] = (
    st.lists(_slug_word, min_size=1, max_size=6).map("-".join).filter(lambda s: len(s) <= 64)
)
"""Valid slugs (``^[a-z0-9]+(-[a-z0-9]+)*$``, at most 64 characters)."""

emails: st.SearchStrategy[str] = st.builds(
    "{}@{}.{}".format,
    st.text(string.ascii_letters + string.digits + "._+-", min_size=1, max_size=20),
    st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=20),
    st.sampled_from(["com", "io", "org", "dev"]),
)
"""Plausible e-mail addresses."""


def enum_values(enum_cls: Any) -> st.SearchStrategy[Any]:
    """A member of ``enum_cls`` or its plain string value (both are accepted)."""
    members = list(enum_cls)
    return st.sampled_from(members) | st.sampled_from([m.value for m in members])


engines = enum_values(Engine)
languages = enum_values(Language)
token_categories = enum_values(TokenCategory)
roles = enum_values(Role)
environments = enum_values(Environment)
subsystems = enum_values(Subsystem)
build_statuses = st.sampled_from(list(BuildStatus))
deployment_statuses = st.sampled_from(list(DeploymentStatus))

# JSON as stored in JSONB and read back equal. Floats stay within +-1e15: JSONB keeps
# numbers as decimals, and a float beyond 2**53 that is integral comes back as a Python int
# whose value is the float's short decimal (e.g. 1.2345678901234567e19 -> 12345678901234567000).
json_scalars: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(min_value=-1e15, max_value=1e15, allow_nan=False, allow_infinity=False)
    | texts(0, 40)
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(texts(0, 20), children, max_size=4)
    ),
    max_leaves=12,
)
"""Any JSON value that round-trips through JSONB."""
json_objects: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    texts(0, 20), json_values, max_size=5
)
"""JSON objects (metadata, template files, artifacts, event payloads)."""

uuids_or_strings = st.uuids().flatmap(lambda u: st.sampled_from([u, str(u)]))

# -- invalid building blocks ---------------------------------------------------------------


def bad_texts(max_size: int = 200, *, min_size: int = 1) -> st.SearchStrategy[Any]:
    """Values a text field of ``min_size..max_size`` refuses: NUL, too long, too short, not str."""
    options = [
        st.builds(lambda a, b: f"{a}\x00{b}", texts(0, 10), texts(0, 10)),
        st.integers(max_size + 1, max_size + 50).map(lambda n: "x" * n),
        st.integers() | st.binary(max_size=5) | st.lists(st.text(max_size=3), max_size=2),
    ]
    if min_size > 0:
        options.append(st.just(""))
    return st.one_of(options)


bad_slugs: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(["", "-", "a-", "-a", "a--b", "A", "Has Space", "ü", "a_b", "a.b", "a/b"]),
    slugs.map(str.upper).filter(lambda s: s != s.lower()),
    slugs.map(lambda s: s + "-"),
    st.just("a" * 65),
    st.builds("{}\x00{}".format, slugs, slugs),
    st.integers(),
)
"""Values a slug refuses."""


def bad_enum_values(enum_cls: Any) -> st.SearchStrategy[Any]:
    """Strings (and non-strings) that are not a value of ``enum_cls``."""
    values = {m.value for m in enum_cls}
    return (
        texts(0, 20).filter(lambda s: s not in values)
        | st.sampled_from([m.value.upper() for m in enum_cls if m.value.upper() not in values])
        | st.integers()
        | st.none()
    )


bad_json: st.SearchStrategy[Any] = st.one_of(
    st.builds(object),
    st.sets(st.integers(), min_size=1, max_size=3),
    st.binary(min_size=1, max_size=5),
    st.integers(min_value=2**64, max_value=2**80),
    st.integers(max_value=-(2**63) - 1, min_value=-(2**80)),
    st.builds(lambda a, b: f"{a}\x00{b}", texts(0, 5), texts(0, 5)),
    st.dictionaries(st.integers(), json_scalars, min_size=1, max_size=3),
    st.builds(lambda v: {"nested": [v]}, st.builds(object)),
    st.builds(lambda k: {f"k{k}\x00": 1}, texts(0, 5)),
    st.builds(lambda s: [s], st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)),
)
"""Values that are not JSON (or that PostgreSQL's JSONB refuses: NUL, over 64-bit ints)."""

non_finite_floats: st.SearchStrategy[float] = st.sampled_from(
    [float("nan"), float("inf"), float("-inf")]
)
"""NaN and infinities: not JSON (kept apart: see test_json_non_finite_floats_are_refused)."""

bad_json_objects: st.SearchStrategy[Any] = st.one_of(
    bad_json,
    st.lists(json_scalars, max_size=3),
    json_scalars.filter(lambda v: v is not None),
)
"""Values a JSON-object field refuses (``None`` means ``{}`` there, so it is not drawn)."""

bad_uuids: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(["", "not-a-uuid", "1234", "g" * 32]),
    st.integers(),
    st.floats(allow_nan=False),
)
"""Values a UUID field refuses."""


def one_bad(
    valid: st.SearchStrategy[Kwargs], bad: Mapping[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[tuple[Kwargs, str]]:
    """Valid kwargs with exactly one field (a key of ``bad``) replaced by a bad value."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[Kwargs, str]:
        kwargs = dict(draw(valid))
        field = draw(st.sampled_from(sorted(bad)))
        kwargs[field] = draw(bad[field])
        return kwargs, field

    return build()


# -- users --------------------------------------------------------------------------------


def user_fields() -> st.SearchStrategy[Kwargs]:
    """Keyword arguments for ``users.create``."""
    return st.fixed_dictionaries(
        {"email": emails, "name": texts(), "subject": texts(1, 255)}, optional={"role": roles}
    )


def bad_user_fields() -> st.SearchStrategy[tuple[Kwargs, str]]:
    """``users.create`` kwargs with one bad field."""
    return one_bad(
        user_fields(),
        {
            "email": st.sampled_from(["", "no-at", "a@b", "two@@x.io", "sp ace@x.io"]),
            "name": bad_texts(200),
            "subject": bad_texts(255),
            "role": bad_enum_values(Role),
        },
    )


# -- templates and projects ---------------------------------------------------------------


def template_fields() -> st.SearchStrategy[Kwargs]:
    """Keyword arguments for ``templates.create`` (make the slug unique yourself)."""
    return st.fixed_dictionaries(
        {"slug": slugs, "name": texts(), "engine": engines},
        optional={"description": optional_texts(300), "files": json_objects},
    )


def bad_template_fields() -> st.SearchStrategy[tuple[Kwargs, str]]:
    """``templates.create`` kwargs with one bad field."""
    return one_bad(
        template_fields(),
        {
            "slug": bad_slugs,
            "name": bad_texts(200),
            "engine": bad_enum_values(Engine),
            "description": bad_texts(10_000, min_size=0),
            "files": bad_json_objects,
        },
    )


def project_fields(owner_id: UUID, template_id: UUID | None = None) -> st.SearchStrategy[Kwargs]:
    """Keyword arguments for ``projects.create`` (make the slug unique yourself)."""
    return st.fixed_dictionaries(
        {"owner_id": st.just(owner_id), "name": texts(), "slug": slugs, "engine": engines},
        optional={
            "template_id": st.sampled_from([None, template_id]),
            "description": optional_texts(300),
            "metadata": json_objects,
        },
    )


def project_changes(template_id: UUID | None = None) -> st.SearchStrategy[Kwargs]:
    """Keyword arguments for ``projects.update`` (any subset of the fields)."""
    return st.fixed_dictionaries(
        {},
        optional={
            "name": texts(),
            "engine": engines,
            "template_id": st.sampled_from([None, template_id]),
            "description": optional_texts(300),
            "metadata": json_objects,
        },
    )


def bad_project_fields(owner_id: UUID) -> st.SearchStrategy[tuple[Kwargs, str]]:
    """``projects.create`` kwargs with one bad field."""
    return one_bad(
        project_fields(owner_id),
        {
            "owner_id": bad_uuids,
            "name": bad_texts(200),
            "slug": bad_slugs,
            "engine": bad_enum_values(Engine),
            "template_id": bad_uuids,
            "description": bad_texts(10_000, min_size=0),
            "metadata": bad_json_objects,
        },
    )


# -- components ---------------------------------------------------------------------------

experts = st.lists(texts(1, 40), max_size=5).map(tuple)


def component_fields(project_id: UUID) -> st.SearchStrategy[Kwargs]:
    """Keyword arguments for ``components.create``."""
    return st.fixed_dictionaries(
        {
            "project_id": st.just(project_id),
            "name": texts(),
            "language": languages,
            "code": texts(0, 500),
        },
        optional={
            "prompt": optional_texts(300),
            "model": optional_texts(200),
            "experts": experts,
            "metadata": json_objects,
        },
    )


def component_changes() -> st.SearchStrategy[Kwargs]:
    """Keyword arguments for ``components.update`` (any subset, maybe empty)."""
    return st.fixed_dictionaries(
        {},
        optional={
            "name": texts(),
            "language": languages,
            "code": texts(0, 200),
            "prompt": optional_texts(100),
            "model": optional_texts(200),
            "experts": experts,
            "metadata": json_objects,
        },
    )


def bad_component_fields(project_id: UUID) -> st.SearchStrategy[tuple[Kwargs, str]]:
    """``components.create`` kwargs with one bad field."""
    return one_bad(
        component_fields(project_id),
        {
            "project_id": bad_uuids,
            "name": bad_texts(200),
            "language": bad_enum_values(Language),
            "code": bad_texts(1_000_000, min_size=0).filter(
                lambda v: not (isinstance(v, str) and len(v) > 1_000_000)
            )
            | st.just("x" * 1_000_001),
            "prompt": bad_texts(100_000, min_size=0).filter(
                lambda v: not (isinstance(v, str) and len(v) > 100_000)
            )
            | st.just("p" * 100_001),
            "model": bad_texts(200, min_size=0),
            "experts": st.one_of(
                st.just("not-a-list"),
                st.lists(bad_texts(200), min_size=1, max_size=2),
                st.just(["e"] * 65),
            ),
            "metadata": bad_json_objects,
        },
    )


# -- design tokens ------------------------------------------------------------------------

token_names = texts(1, 60)
token_groups = st.none() | texts(1, 40)


def token_fields(project_id: UUID) -> st.SearchStrategy[Kwargs]:
    """Keyword arguments for ``tokens.upsert``."""
    return st.fixed_dictionaries(
        {
            "project_id": st.just(project_id),
            "name": token_names,
            "category": token_categories,
            "value": json_values,
        },
        optional={"group": token_groups},
    )


def bad_token_fields(project_id: UUID) -> st.SearchStrategy[tuple[Kwargs, str]]:
    """``tokens.upsert`` kwargs with one bad field."""
    return one_bad(
        token_fields(project_id),
        {
            "project_id": bad_uuids,
            "name": bad_texts(200),
            "category": bad_enum_values(TokenCategory),
            "value": bad_json,
            "group": bad_texts(200),
        },
    )


def token_sets(max_size: int = 20) -> st.SearchStrategy[list[Kwargs]]:
    """Token mappings for ``tokens.sync``, names distinct."""
    one = st.fixed_dictionaries(
        {"name": token_names, "category": token_categories, "value": json_values},
        optional={"group": token_groups},
    )
    return st.lists(one, max_size=max_size, unique_by=lambda t: t["name"])


# -- builds -------------------------------------------------------------------------------

build_targets = texts(1, 100)
"""Build targets (``"webgl"``, ``"windows-x64"`` ... any 1..100 characters)."""
progress_values = st.integers(0, 100)
bad_progress: st.SearchStrategy[Any] = (
    st.integers(max_value=-1)
    | st.integers(min_value=101)
    | st.booleans()
    | st.floats(0, 100)
    | st.text(max_size=3)
)
"""Values ``builds.update(progress=)`` refuses."""
build_logs = texts(0, 300)


def build_fields(project_id: UUID) -> st.SearchStrategy[Kwargs]:
    """Keyword arguments for ``builds.create``."""
    return st.fixed_dictionaries({"project_id": st.just(project_id), "target": build_targets})


def bad_build_fields(project_id: UUID) -> st.SearchStrategy[tuple[Kwargs, str]]:
    """``builds.create`` kwargs with one bad field."""
    return one_bad(build_fields(project_id), {"project_id": bad_uuids, "target": bad_texts(100)})


def bad_build_changes() -> st.SearchStrategy[tuple[Kwargs, str]]:
    """``builds.update`` kwargs with one bad field (status, progress or artifacts)."""
    return one_bad(
        st.just({}),
        {
            "status": bad_enum_values(BuildStatus),
            "progress": bad_progress,
            "artifacts": bad_json_objects,
        },
    )


# -- deployments --------------------------------------------------------------------------

deployment_versions = texts(1, 100)
"""Deployment versions (``"1.4.2"``, a git sha ... any 1..100 characters)."""

_host = st.lists(
    st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=12), min_size=1, max_size=3
).map(".".join)
_path = st.lists(
    st.text(string.ascii_letters + string.digits + "-._~%", min_size=1, max_size=10), max_size=4
).map(lambda parts: "".join("/" + p for p in parts))
urls: st.SearchStrategy[str] = st.builds(
    "{}://{}{}{}".format,
    st.sampled_from(["http", "https"]),
    _host,
    st.sampled_from(["", ":8080", ":443"]),
    _path,
)
"""Valid deployment URLs: http(s), a host, no spaces."""
bad_urls: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(
        ["", "example.com", "ftp://example.com", "http://", "https:///path", "javascript:x"]
    ),
    urls.map(lambda u: u + " x"),
    urls.map(lambda u: u + "\x00"),
    urls.map(lambda u: u + "\n"),
    st.just("https://e.io/" + "a" * 2048),
    st.integers(),
)
"""Values ``deployments.update(url=)`` refuses."""


def deployment_fields(project_id: UUID, build_id: UUID | None = None) -> st.SearchStrategy[Kwargs]:
    """Keyword arguments for ``deployments.create``."""
    return st.fixed_dictionaries(
        {
            "project_id": st.just(project_id),
            "environment": environments,
            "version": deployment_versions,
        },
        optional={"build_id": st.sampled_from([None, build_id])},
    )


def bad_deployment_fields(project_id: UUID) -> st.SearchStrategy[tuple[Kwargs, str]]:
    """``deployments.create`` kwargs with one bad field."""
    return one_bad(
        deployment_fields(project_id),
        {
            "project_id": bad_uuids,
            "environment": bad_enum_values(Environment),
            "version": bad_texts(100),
            "build_id": bad_uuids,
        },
    )


# -- events -------------------------------------------------------------------------------

event_types = texts(1, 200)
event_payloads = json_objects
"""Audit payloads: JSON objects."""


def event_fields(project_id: UUID | None = None) -> st.SearchStrategy[Kwargs]:
    """Keyword arguments for ``events.create``."""
    return st.fixed_dictionaries(
        {"type": event_types, "subsystem": subsystems},
        optional={"payload": event_payloads, "project_id": st.sampled_from([None, project_id])},
    )


def bad_event_fields() -> st.SearchStrategy[tuple[Kwargs, str]]:
    """``events.create`` kwargs with one bad field."""
    return one_bad(
        event_fields(),
        {
            "type": bad_texts(200),
            "subsystem": bad_enum_values(Subsystem),
            "payload": bad_json_objects,
            "project_id": bad_uuids,
        },
    )


def domain_events(project_id: UUID | None = None) -> st.SearchStrategy[DomainEvent]:
    """Any catalogued event with arbitrary valid fields (for bus and outbox round-trips)."""
    pid = st.just(project_id) if project_id is not None else st.uuids()
    ids = st.uuids()
    name = texts(1, 60)
    common = {"project_id": pid}
    return st.one_of(
        st.builds(
            ComponentCreated,
            component_id=ids,
            name=name,
            language=st.sampled_from(list(Language)),
            version=st.integers(1, 10_000),
            **common,
        ),
        st.builds(
            ComponentUpdated,
            component_id=ids,
            name=name,
            language=st.sampled_from(list(Language)),
            version=st.integers(1, 10_000),
            **common,
        ),
        st.builds(ComponentDeleted, component_id=ids, name=name, **common),
        st.builds(BuildStarted, build_id=ids, target=build_targets, **common),
        st.builds(BuildProgress, build_id=ids, progress=progress_values, **common),
        st.builds(
            BuildCompleted, build_id=ids, target=build_targets, artifacts=json_objects, **common
        ),
        st.builds(BuildFailed, build_id=ids, target=build_targets, **common),
        st.builds(
            DeploymentStarted,
            deployment_id=ids,
            environment=st.sampled_from(list(Environment)),
            version=deployment_versions,
            **common,
        ),
        st.builds(
            DeploymentCompleted,
            deployment_id=ids,
            environment=st.sampled_from(list(Environment)),
            version=deployment_versions,
            url=st.none() | urls,
            **common,
        ),
        st.builds(
            DeploymentFailed,
            deployment_id=ids,
            environment=st.sampled_from(list(Environment)),
            version=deployment_versions,
            **common,
        ),
        st.builds(
            TokenUpdated,
            token_id=ids,
            name=name,
            category=st.sampled_from(list(TokenCategory)),
            version=st.integers(1, 10_000),
            **common,
        ),
        st.builds(
            TokensSynced, count=st.integers(0, 10_000), changed=st.integers(0, 10_000), **common
        ),
    )


# -- injection strings --------------------------------------------------------------------

INJECTIONS = (
    "Robert'); DROP TABLE projects;--",
    "' OR '1'='1",
    "%(id)s",
    "%s %% $1 ::uuid",
    '"; SELECT pg_sleep(10); --',
    "\\'; DELETE FROM components; --",
    "$$ LANGUAGE plpgsql; $$",
    "{}[],:\"'\\/",
)
"""Strings that would break naively composed SQL; they must be stored verbatim."""
injections = st.sampled_from(INJECTIONS)


# -- hostile input ------------------------------------------------------------------------

hostile_texts: st.SearchStrategy[Any] = st.one_of(
    st.text(),  # any code point, NUL and lone surrogates included
    st.text(_chars, max_size=20).map(lambda s: f"{s}\x00{s}"),  # a NUL inside
    st.text(_chars, min_size=1, max_size=4).map(lambda s: s * 400),  # huge
    st.sampled_from(["", "\x00", "a\x00b", "\ud800", "e\u0301", "\u202eevil", "😀" * 300]),
    st.sampled_from([None, 0, 1.5, b"bytes", ["x"], {"x": 1}]),  # not text at all
)
"""Values a user could send as a text field: NUL bytes, lone surrogates, huge strings,
combining and right-to-left marks, emoji, empty, and non-strings."""


def _mutations(body: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    keys = sorted(body)
    drop = st.sampled_from(keys).map(lambda k: {x: v for x, v in body.items() if x != k})
    change = st.tuples(st.sampled_from(keys), json_values | hostile_texts.filter(_jsonable))
    extra = st.tuples(texts(1, 20), json_values)
    return st.one_of(
        drop,
        change.map(lambda kv: {**body, kv[0]: kv[1]}),
        extra.map(lambda kv: {**body, kv[0]: kv[1]}),
    )


def _jsonable(value: Any) -> bool:
    return not isinstance(value, bytes) and not (
        isinstance(value, str) and any("\ud800" <= c <= "\udfff" for c in value)
    )


def mutated_event_bodies() -> st.SearchStrategy[dict[str, Any]]:
    """The wire form of a valid event with one field dropped, changed to any JSON value
    (another type, huge or odd text), or one unknown field added."""
    return domain_events().map(lambda e: orjson.loads(encode_event(e))).flatmap(_mutations)


forged_cursors: st.SearchStrategy[str] = st.one_of(
    st.text(max_size=80),
    st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    st.text(string.ascii_letters + string.digits + "-_=", min_size=20, max_size=30),
    st.integers(1, 5).map(lambda n: "A" * 10_000 * n),  # oversized
)
"""Strings sent as a pagination cursor: garbage, base64 of random bytes (right length or
not), and oversized ones. A real cursor edited by a character is made in the tests."""

query_texts: st.SearchStrategy[str] = st.one_of(
    st.text(max_size=40),
    st.sampled_from(INJECTIONS),
    st.integers().map(str),
    st.text(_chars, min_size=1, max_size=3).map(lambda s: s * 1000),
)
"""Values for a query-string parameter: any text (NUL too), SQL-ish, numbers, huge."""

http_methods: st.SearchStrategy[str] = st.sampled_from(
    ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "get", "X"]
)

url_paths: st.SearchStrategy[str] = st.one_of(
    st.lists(
        st.sampled_from(["health", "live", "ready", "", "x", "..", "%2F", "héalth", "HEALTH"]),
        max_size=5,
    ).map(lambda parts: "/" + "/".join(parts)),
    st.text(max_size=60).map(lambda s: "/" + s),
)
"""Request paths near the health routes (nested, doubled slashes, case, dots) and any text."""

header_lists: st.SearchStrategy[list[tuple[bytes, bytes]]] = st.lists(
    st.tuples(
        st.text(string.ascii_lowercase + "-", min_size=1, max_size=20).map(str.encode),
        st.binary(max_size=50) | st.integers(1, 4).map(lambda n: b"v" * 16_384 * n),
    ),
    max_size=6,
)
"""ASGI request headers: arbitrary bytes in values, some of them 16-64 KiB."""
