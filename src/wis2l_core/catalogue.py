"""The event catalogue: one frozen attrs class per event the platform publishes.

Every event has a subject ``<namespace>.<entity>.<action>`` (``wis2l.build.progress`` with
the default namespace), a ``type`` equal to ``<entity>.<action>``, and the common fields
``id`` (a UUID, also the ``Nats-Msg-Id`` header, so JetStream drops a repeat),
``occurred_at`` (UTC) and ``project_id``. On the wire an event is a JSON object of its
fields plus ``type``; UUIDs and times are strings (RFC 9562 / ISO 8601).
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar, overload
from uuid import UUID

import attrs
import orjson
from cattrs import Converter

from wis2l_core.errors import ValidationError
from wis2l_core.ids import uuid7
from wis2l_core.models import Environment, Language, Role, Subsystem, TokenCategory
from wis2l_core.serde import converter
from wis2l_core.subjects import event_subject

E = TypeVar("E", bound="DomainEvent")

__all__ = [
    "CATALOGUE",
    "BuildCompleted",
    "BuildFailed",
    "BuildProgress",
    "BuildStarted",
    "ComponentCreated",
    "ComponentDeleted",
    "ComponentUpdated",
    "DeploymentCompleted",
    "DeploymentFailed",
    "DeploymentStarted",
    "DomainEvent",
    "TokenDeleted",
    "TokenUpdated",
    "TokensSynced",
    "UserCreated",
    "UserRoleChanged",
    "UserSignedIn",
    "decode_event",
    "encode_event",
    "event_class",
    "event_payload",
    "field_docs",
]


def _now() -> datetime:
    return datetime.now(UTC)


@attrs.frozen(kw_only=True)
class DomainEvent:
    """The base of every catalogued event.

    Attributes:
        id: Unique per event, a UUID (v7 when made here); also the ``Nats-Msg-Id`` header,
            so JetStream drops a repeat and consumers can de-duplicate.
        type: ``<entity>.<action>``, e.g. ``"build.progress"``: the subject without its
            namespace, and the key that says which event the object is.
        occurred_at: When it happened: ISO 8601 with a UTC offset.
        project_id: The project the event is about.
    """

    type: ClassVar[str]
    """``<entity>.<action>``: the subject without its namespace."""
    subsystem: ClassVar[Subsystem]
    """The subsystem whose audit log records it."""

    project_id: UUID
    id: UUID = attrs.field(factory=uuid7)
    occurred_at: datetime = attrs.field(factory=_now)

    def __attrs_post_init__(self) -> None:
        """Check the event as it is built, so a malformed one never reaches the bus.

        A value of a field's own type passes at once. Any other value (a UUID or an enum
        value given as a string, say) is checked by the round trip a consumer would make,
        and kept in its decoded form; one that does not survive it is refused.

        Raises:
            ValidationError: a field is missing its type and cannot be read as it
                (``field`` names it), or the event cannot be encoded.
        """
        if _decoding.get():
            return  # built by decode_event, field by field from the wire form
        cls = type(self)
        checks = _CHECKS.get(cls) or _checks_of(cls)
        for name, accepted in checks:
            if accepted is None or not isinstance(getattr(self, name), accepted):
                _normalise(self)
                return

    def subject(self, namespace: str = "wis2l") -> str:
        """The NATS subject, e.g. ``wis2l.build.progress``."""
        return event_subject(namespace, self.type)


_decoding: ContextVar[bool] = ContextVar("wis2l_decoding", default=False)
_CHECKS: dict[type[DomainEvent], tuple[tuple[str, tuple[type, ...] | None], ...]] = {}


def _checks_of(cls: type[DomainEvent]) -> tuple[tuple[str, tuple[type, ...] | None], ...]:
    """Each field of ``cls`` and the classes whose instances it takes as they are (None:
    only the round trip can tell)."""
    hints = typing.get_type_hints(cls)
    checks = tuple((f.name, _accepted(hints.get(f.name, Any))) for f in attrs.fields(cls))
    _CHECKS[cls] = checks
    return checks


def _accepted(hint: Any) -> tuple[type, ...] | None:
    if hint is None or hint is type(None):
        return (type(None),)
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        parts = [_accepted(arg) for arg in typing.get_args(hint)]
        return None if None in parts else tuple(t for part in parts if part for t in part)
    if origin is Mapping and typing.get_args(hint) == (str, Any):
        return (Mapping,)  # a JSON object: what it holds is checked when it is encoded
    if origin is None and isinstance(hint, type) and hint is not object:
        return (int, float) if hint is float else (hint,)
    return None


def _normalise(event: DomainEvent) -> None:
    """Put ``event`` through the wire form and back; keep the decoded field values."""
    try:
        data = orjson.dumps(event_payload(event))
    except Exception as exc:  # a field of a type the converter cannot write
        raise ValidationError(f"cannot encode {event.type!r}: {exc}", field="event") from exc
    decoded = decode_event(data, type(event))
    for field in attrs.fields(type(event)):
        object.__setattr__(event, field.name, getattr(decoded, field.name))


@attrs.frozen(kw_only=True)
class ComponentCreated(DomainEvent):
    """A SPARK component was generated and stored.

    Attributes:
        component_id: The new component's id.
        name: The component's name, unique within its project.
        language: The language of its code: one of the ``Language`` values (``"csharp"``,
            ``"rust"``, ...).
        version: Its version: 1 for a new component.
    """

    type: ClassVar[str] = "component.created"
    subsystem: ClassVar[Subsystem] = Subsystem.SPARK
    component_id: UUID
    name: str
    language: Language
    version: int


@attrs.frozen(kw_only=True)
class ComponentUpdated(DomainEvent):
    """A component changed; ``version`` is its new version.

    Attributes:
        component_id: The component's id.
        name: Its name after the change.
        language: Its language after the change.
        version: Its new version (one more than before the change).
    """

    type: ClassVar[str] = "component.updated"
    subsystem: ClassVar[Subsystem] = Subsystem.SPARK
    component_id: UUID
    name: str
    language: Language
    version: int


@attrs.frozen(kw_only=True)
class ComponentDeleted(DomainEvent):
    """A component was deleted.

    Attributes:
        component_id: The deleted component's id.
        name: The name it had.
    """

    type: ClassVar[str] = "component.deleted"
    subsystem: ClassVar[Subsystem] = Subsystem.SPARK
    component_id: UUID
    name: str


@attrs.frozen(kw_only=True)
class BuildStarted(DomainEvent):
    """A build moved from pending to building.

    Attributes:
        build_id: The build's id.
        target: What it builds for, e.g. ``"webgl"``.
    """

    type: ClassVar[str] = "build.started"
    subsystem: ClassVar[Subsystem] = Subsystem.IGNIS
    build_id: UUID
    target: str


@attrs.frozen(kw_only=True)
class BuildProgress(DomainEvent):
    """A building build reported progress without a status change.

    Attributes:
        build_id: The build's id.
        progress: Percent done, 0 to 100.
    """

    type: ClassVar[str] = "build.progress"
    subsystem: ClassVar[Subsystem] = Subsystem.IGNIS
    build_id: UUID
    progress: int


@attrs.frozen(kw_only=True)
class BuildCompleted(DomainEvent):
    """A build finished; ``artifacts`` is its manifest.

    Attributes:
        build_id: The build's id.
        target: What it built for, e.g. ``"webgl"``.
        artifacts: The artifact manifest: a JSON object whose shape the build tool decides
            (``{}`` when there is none).
    """

    type: ClassVar[str] = "build.completed"
    subsystem: ClassVar[Subsystem] = Subsystem.IGNIS
    build_id: UUID
    target: str
    artifacts: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class BuildFailed(DomainEvent):
    """A build failed (from pending or building).

    Attributes:
        build_id: The build's id.
        target: What it was building for.
    """

    type: ClassVar[str] = "build.failed"
    subsystem: ClassVar[Subsystem] = Subsystem.IGNIS
    build_id: UUID
    target: str


@attrs.frozen(kw_only=True)
class DeploymentStarted(DomainEvent):
    """A deployment moved from pending to in_progress.

    Attributes:
        deployment_id: The deployment's id.
        environment: Where it goes: ``"staging"`` or ``"production"``.
        version: The version being deployed (free text, e.g. ``"1.4.2"``).
    """

    type: ClassVar[str] = "deployment.started"
    subsystem: ClassVar[Subsystem] = Subsystem.WAYPOINT
    deployment_id: UUID
    environment: Environment
    version: str


@attrs.frozen(kw_only=True)
class DeploymentCompleted(DomainEvent):
    """A deployment is live at ``url``.

    Attributes:
        deployment_id: The deployment's id.
        environment: Where it went: ``"staging"`` or ``"production"``.
        version: The version deployed.
        url: Where it is live, or ``null`` when the deployment has no URL.
    """

    type: ClassVar[str] = "deployment.completed"
    subsystem: ClassVar[Subsystem] = Subsystem.WAYPOINT
    deployment_id: UUID
    environment: Environment
    version: str
    url: str | None = None


@attrs.frozen(kw_only=True)
class DeploymentFailed(DomainEvent):
    """A deployment failed.

    Attributes:
        deployment_id: The deployment's id.
        environment: Where it was going: ``"staging"`` or ``"production"``.
        version: The version that failed to deploy.
    """

    type: ClassVar[str] = "deployment.failed"
    subsystem: ClassVar[Subsystem] = Subsystem.WAYPOINT
    deployment_id: UUID
    environment: Environment
    version: str


@attrs.frozen(kw_only=True)
class TokenUpdated(DomainEvent):
    """A design token was created or its value changed.

    Attributes:
        token_id: The token's id.
        name: The token's name, e.g. ``"color.primary"``.
        category: Its kind: one of the ``TokenCategory`` values (``"color"``, ``"spacing"``,
            ...).
        version: Its new version: 1 when created, one more at each value change.
    """

    type: ClassVar[str] = "token.updated"
    subsystem: ClassVar[Subsystem] = Subsystem.SLATE
    token_id: UUID
    name: str
    category: TokenCategory
    version: int


@attrs.frozen(kw_only=True)
class TokenDeleted(DomainEvent):
    """A design token was deleted.

    Attributes:
        token_id: The deleted token's id.
        name: Its name, e.g. ``"color.primary"``.
        category: Its kind: one of the ``TokenCategory`` values.
    """

    type: ClassVar[str] = "token.deleted"
    subsystem: ClassVar[Subsystem] = Subsystem.SLATE
    token_id: UUID
    name: str
    category: TokenCategory


@attrs.frozen(kw_only=True)
class TokensSynced(DomainEvent):
    """A token set was synced into a project.

    Attributes:
        count: How many tokens the sync sent.
        changed: How many of them were new or had a new value (0 to ``count``).
    """

    type: ClassVar[str] = "token.synced"
    subsystem: ClassVar[Subsystem] = Subsystem.SLATE
    count: int
    changed: int


@attrs.frozen(kw_only=True)
class _IdentityEvent(DomainEvent):
    """The base of the identity events: about a user, not a project.

    Attributes:
        project_id: Always ``null``: identity events belong to no project.
        user_id: The user's id.
        sub: The user's nocturnaID subject (the tokens' ``sub``).
    """

    subsystem: ClassVar[Subsystem] = Subsystem.IDENTITY
    project_id: UUID | None = None  # type: ignore[assignment]
    user_id: UUID
    sub: str


@attrs.frozen(kw_only=True)
class UserCreated(_IdentityEvent):
    """A first sign-in created a user (``wis.identity``); ``project_id`` is null.

    Attributes:
        email: The user's e-mail address.
        name: The user's name.
        role: The role given: ``"viewer"``, ``"developer"`` or ``"admin"``.
    """

    type: ClassVar[str] = "user.created"
    email: str
    name: str
    role: Role


@attrs.frozen(kw_only=True)
class UserSignedIn(_IdentityEvent):
    """A user signed in (``wis.identity.sign_in``: a verified token opened a session);
    ``project_id`` is null. Each request's ``authenticate`` is not recorded.

    Attributes:
        role: The user's role at sign-in.
    """

    type: ClassVar[str] = "user.signed_in"
    role: Role


@attrs.frozen(kw_only=True)
class UserRoleChanged(_IdentityEvent):
    """A user's role changed (``wis.users.update(role=...)``, or the role claim at sign-in
    when ``WIS2L_OIDC_ROLE_CLAIM`` is set); ``project_id`` is null.

    Attributes:
        previous_role: The role before.
        role: The role now.
    """

    type: ClassVar[str] = "user.role_changed"
    previous_role: Role
    role: Role


CATALOGUE: Mapping[str, type[DomainEvent]] = {
    cls.type: cls
    for cls in (
        ComponentCreated,
        ComponentUpdated,
        ComponentDeleted,
        BuildStarted,
        BuildProgress,
        BuildCompleted,
        BuildFailed,
        DeploymentStarted,
        DeploymentCompleted,
        DeploymentFailed,
        TokenUpdated,
        TokenDeleted,
        TokensSynced,
        UserCreated,
        UserSignedIn,
        UserRoleChanged,
    )
}
"""``type`` -> event class, for every catalogued event."""


def event_class(type_: str) -> type[DomainEvent]:
    """The class for an event ``type`` such as ``"build.progress"``.

    Raises:
        KeyError: the type is not in the catalogue.
    """
    return CATALOGUE[type_]


def event_payload(event: DomainEvent) -> dict[str, Any]:
    """The wire form of ``event`` as plain data: its fields plus ``type``.

    This is what the outbox stores in ``events.payload`` and what goes on the wire.
    """
    payload: dict[str, Any] = converter.unstructure(event)
    payload["type"] = event.type
    return payload


def encode_event(event: DomainEvent) -> bytes:
    """``event`` as JSON bytes, exactly as it is published."""
    return orjson.dumps(event_payload(event))


@overload
def decode_event(data: bytes | str | Mapping[str, Any], cls: type[E]) -> E: ...
@overload
def decode_event(data: bytes | str | Mapping[str, Any], cls: None = None) -> DomainEvent: ...
def decode_event(
    data: bytes | str | Mapping[str, Any], cls: type[DomainEvent] | None = None
) -> DomainEvent:
    """Build an event from its JSON (or already parsed) wire form.

    Fields the class does not know are ignored, so a consumer on an older catalogue keeps
    working when an event gains a field.

    Args:
        data: the message body, or the parsed object.
        cls: the class expected; when omitted it is looked up by the ``type`` field.
            When given, a body without ``type`` is accepted (the caller named the type,
            as a NATS subject or a CloudEvents ``ce-type`` header does); a body whose
            ``type`` names another event is refused.

    Raises:
        ValidationError: not JSON, not an object, the wrong or an unknown ``type``, or a
            field missing or malformed (``field`` names the culprit when known).
    """
    try:
        obj = orjson.loads(data) if isinstance(data, bytes | str) else data
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"event is not JSON: {exc}", field="payload") from exc
    if not isinstance(obj, Mapping):
        raise ValidationError("event is not a JSON object", field="payload")
    type_ = obj.get("type")
    if cls is None:
        found = CATALOGUE.get(type_) if isinstance(type_, str) else None
        if found is None:
            raise ValidationError(f"unknown event type {type_!r}", field="type")
        cls = found
    elif "type" in obj and type_ != cls.type:
        raise ValidationError(f"expected a {cls.type!r} event, got {type_!r}", field="type")
    token = _decoding.set(True)  # _WIRE checks each field's kind: no second check
    try:
        return _WIRE.structure(obj, cls)
    except Exception as exc:  # cattrs raises ClassValidationError and friends
        raise ValidationError(
            f"malformed {cls.type!r} event: {_describe(exc)}", field=_culprit(exc)
        ) from exc
    finally:
        _decoding.reset(token)


def _exactly(kind: type) -> Callable[[Any, Any], Any]:
    def check(value: Any, cl: Any) -> Any:
        if type(value) is kind:
            return value if cl is kind else cl(value)  # cl: a subclass, e.g. a StrEnum
        if kind is float and type(value) is int:
            return float(value)
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")

    return check


def _wire_converter() -> Converter:
    conv = converter.copy()
    for kind in (str, int, float, bool):
        # cattrs structures these (and their subclasses: the enums) with ``cl(value)``,
        # which turns ``null`` into ``"None"``; this hook takes only a value of the kind.
        conv.register_structure_hook(kind, _exactly(kind))
    return conv


_WIRE = _wire_converter()
"""The converter that reads events: a JSON value of the wrong kind is refused, where cattrs'
default would turn ``null`` into ``"None"`` or ``"5"`` into ``5``."""


def _describe(exc: BaseException) -> str:
    inner = getattr(exc, "exceptions", None)
    if inner:
        return "; ".join(_describe(e) for e in inner)
    notes = getattr(exc, "__notes__", None) or []
    return f"{type(exc).__name__}: {exc}" + (f" ({notes[0]})" if notes else "")


def _culprit(exc: BaseException) -> str | None:
    for note in getattr(exc, "__notes__", None) or []:
        match = re.search(r"attribute '?([a-z_]+)'?|field '?([a-z_]+)'?", str(note))
        if match:
            return match.group(1) or match.group(2)
    inner = getattr(exc, "exceptions", None)
    return _culprit(inner[0]) if inner else None


def field_docs(cls: type[DomainEvent]) -> dict[str, str]:
    """Each wire field of ``cls`` and its description, common fields first.

    Read from the Google-style ``Attributes:`` sections of the class docstrings with
    griffe's parser (the one the API reference is built with), so the reference docs, the
    AsyncAPI document and ``docs/events.md`` share one source. griffe is imported here, on
    first use: only the schema needs it.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if isinstance(klass, type) and issubclass(klass, DomainEvent):
            docs.update(_attribute_docs(klass))
    order = ["id", "type", "occurred_at", "project_id"]
    order += [f.name for f in attrs.fields(cls) if f.name not in order]
    return {name: docs.get(name, "") for name in order}


def _attribute_docs(klass: type) -> dict[str, str]:
    """The ``Attributes:`` entries of one class's own docstring (name -> one line)."""
    from griffe import Docstring, DocstringSectionAttributes

    text = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
    found: dict[str, str] = {}
    for section in Docstring(text).parse("google"):
        if isinstance(section, DocstringSectionAttributes):
            for attribute in section.value:
                found[attribute.name] = " ".join(attribute.description.split())
    return found
