"""Settings: where the servers are and how the runtime behaves, read from the environment.

``Settings.from_env()`` is the usual way in; ``Settings(...)`` and :func:`attrs.evolve`
work too, and check the same things. Passwords and tokens never show in ``repr()``,
``str()``, logs or errors: URLs go through :func:`redact_url`, which knows every place
libpq, redis-py and nats-py take a secret from.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from pathlib import Path

import attrs

from wis2l_core import _urls
from wis2l_core._secrets import redact_url
from wis2l_core.errors import ConfigError

__all__ = [
    "LIBRARY_SOURCE",
    "AppEnvironment",
    "FirstSignIn",
    "MigrationSource",
    "Settings",
    "SqlComments",
    "parse_duration",
    "redact_url",
]


class AppEnvironment(enum.StrEnum):
    """How the runtime treats a service that is down at start (``WIS2L_ENV``)."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class FirstSignIn(enum.StrEnum):
    """What a verified token whose ``sub`` has no user does (``WIS2L_OIDC_FIRST_SIGN_IN``)."""

    CREATE = "create"
    """Create the user from the token's ``email`` and ``name`` claims."""
    REFUSE = "refuse"
    """Refuse the token: users are provisioned some other way."""


class SqlComments(enum.StrEnum):
    """What the library writes in a comment before a named query (``WIS2L_SQL_COMMENTS``)."""

    OFF = "off"
    """No comment: the SQL is sent as written."""
    NAME = "name"
    """``/* users.find_by_id */``: the same text every time, so prepared statements,
    PgBouncer and ``pg_stat_statements`` work as without it."""
    TRACEPARENT = "traceparent"
    """The name and the W3C ``traceparent`` of the statement's span: the text differs on
    every call, so such a statement is not prepared (statement caches cannot reuse it)."""


SERVICES = ("database", "redis", "nats")

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What ``namespace`` and ``stream_name`` may be: 1-64 letters, digits, ``_`` or ``-``.

The namespace prefixes Redis keys (``<namespace>:<service>:...``) and NATS subjects
(``<namespace>.<entity>.<action>``), so it must be one subject token without ``:``;
the stream name must be one NATS accepts (no blanks, ``.``, ``*``, ``>`` or slashes).
"""


def _name_validator(what: str) -> Callable[[object, attrs.Attribute[str], object], None]:
    def check(_instance: object, attribute: attrs.Attribute[str], value: object) -> None:
        if not isinstance(value, str) or NAME_PATTERN.fullmatch(value) is None:
            raise ConfigError(
                f"{attribute.name} must be 1-64 letters, digits, '_' or '-' ({what}), "
                f"not {value!r}",
                variable=attribute.name,
            )

    return check


LIBRARY_SOURCE = "wis2l-core"
"""The source name of the library's own migrations in ``wis2l_migrations``."""


@attrs.frozen
class MigrationSource:
    """One folder of an app's own migrations, tracked in ``wis2l_migrations`` as ``name``.

    Attributes:
        name: what ``wis2l_migrations.source`` records; 1-64 letters, digits, ``_`` or
            ``-``, never ``wis2l-core``. Keep it stable: renaming it re-applies the folder.
        path: the folder of ``NNNN_name.sql`` files (relative paths are resolved against
            the working directory when the migrations are read).
    """

    name: str
    path: Path = attrs.field(converter=Path)

    @classmethod
    def parse(cls, entry: str | Path | MigrationSource) -> MigrationSource:
        """``"name=path"``, or a bare path whose folder name becomes the source name.

        Raises:
            ConfigError: an empty entry, or a name that is not 1-64 letters, digits,
                ``_`` or ``-``, or is ``wis2l-core``.
        """
        if isinstance(entry, MigrationSource):
            source = entry
        else:
            text = str(entry).strip()
            name, sep, path = text.partition("=")
            if not sep:
                name, path = Path(text).resolve().name if text else "", text
            if not path.strip():
                raise ConfigError(f"migrations: empty folder in {text!r}", variable="migrations")
            source = cls(name=name.strip(), path=Path(path.strip()))
        if NAME_PATTERN.fullmatch(source.name) is None or source.name == LIBRARY_SOURCE:
            raise ConfigError(
                f"migrations: source name {source.name!r} must be 1-64 letters, digits, '_' "
                f"or '-' and not {LIBRARY_SOURCE!r} (use name=path)",
                variable="migrations",
            )
        return source


def _range_validator(
    low: int, high: int, what: str
) -> Callable[[object, attrs.Attribute[int], int], None]:
    def check(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if not low <= value <= high:
            raise ConfigError(
                f"{attribute.name} must be {low}-{high} ({what}), not {value!r}",
                variable=attribute.name,
            )

    return check


_replicas_validator = _range_validator(1, 5, "JetStream allows at most 5 replicas")
_partitions_validator = _range_validator(1, 1024, "outbox partitions")


def _split_paths(raw: str) -> list[str]:
    """A list of folders: comma- or ``os.pathsep``-separated, blanks dropped."""
    return [p.strip() for p in re.split(f"[,{re.escape(os.pathsep)}]", raw) if p.strip()]


def _sources(value: object) -> tuple[MigrationSource, ...]:
    items: Iterable[str | Path | MigrationSource]
    if isinstance(value, str):
        items = _split_paths(value)
    elif isinstance(value, Path | MigrationSource):
        items = [value]
    else:
        items = value  # type: ignore[assignment]
    sources = tuple(MigrationSource.parse(item) for item in items)
    names = [s.name for s in sources]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(
                f"migrations: two folders share the source name {name!r} (use name=path)",
                variable="migrations",
            )
    return sources


def _paths(value: object) -> tuple[Path, ...]:
    if isinstance(value, str):
        return tuple(Path(p) for p in _split_paths(value))
    if isinstance(value, Path):
        return (value,)
    return tuple(Path(p) for p in value)  # type: ignore[attr-defined]


def _redact_one(url: str) -> str:
    return repr(redact_url(url))


def _redact_optional(url: str | None) -> str:
    return "None" if url is None else _redact_one(url)


def _redact_many(urls: tuple[str, ...]) -> str:
    return repr(tuple(redact_url(u) for u in urls))


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return (values,) if isinstance(values, str) else tuple(values)


def _str_frozenset(values: Iterable[str]) -> frozenset[str]:
    return frozenset((values,) if isinstance(values, str) else values)


_Read = Callable[[str, str], object]
"""How ``from_env`` turns a variable's text into a field value: ``read(text, variable)``,
raising a ``ConfigError`` that names ``variable``."""


def _text(raw: str, _variable: str) -> str:
    return raw


def _comma_list(raw: str, _variable: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _env(
    variable: str,
    read: _Read = _text,
    otherwise: Callable[[Mapping[str, str]], object] | None = None,
) -> dict[str, object]:
    """A field's metadata: the environment variable ``from_env`` reads it from, and how.

    Args:
        variable: the variable's name, kept as ``metadata["env"]``.
        read: turns the variable's text into the field's value.
        otherwise: builds the value from other variables when this one is unset (the URL
            parts, ``DATABASE_HOST``, ...); ``None`` leaves the field's default.
    """
    return {"env": variable, "read": read, "otherwise": otherwise}


def _kind(parse: Callable[[str], object], what: str) -> _Read:
    """A reader from ``parse``, whose ``ValueError`` says the variable must be ``what``."""

    def read(raw: str, variable: str) -> object:
        try:
            return parse(raw)
        except ValueError:
            raise ConfigError(
                f"{variable} must be {what}, not {raw!r}", variable=variable
            ) from None

    return read


def _choice(choices: type[enum.StrEnum]) -> _Read:
    """A reader of one of ``choices``' values, in any case."""
    return _kind(lambda raw: choices(raw.lower()), " or ".join(repr(c.value) for c in choices))


def _decimal(raw: str) -> int:
    # int() also takes "+5", "5_0" and non-ASCII digits; a setting should not.
    if not (raw.isascii() and raw.isdigit()):
        raise ValueError(raw)
    return int(raw)


def _positive_int(raw: str) -> int:
    value = _decimal(raw)
    if value < 1:
        raise ValueError(raw)
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0 or value == float("inf"):
        raise ValueError(raw)
    return value


def _bool(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(raw: str) -> timedelta:
    """``"90d"``, ``"12h"``, ``"30m"``, ``"45s"`` or ``"2w"`` as a positive ``timedelta``.

    Raises:
        ValueError: anything else.
    """
    number, unit = raw[:-1], raw[-1:].lower()
    if unit not in _DURATION_UNITS or not (number.isascii() and number.isdigit()):
        raise ValueError(raw)
    seconds = int(number) * _DURATION_UNITS[unit]
    if seconds <= 0:
        raise ValueError(raw)
    return timedelta(seconds=seconds)


_POSITIVE_INT = _kind(_positive_int, "a positive integer")
_SECONDS = _kind(_non_negative_float, "a number of seconds >= 0")
_BOOL = _kind(_bool, "a boolean (true/false, 1/0, yes/no, on/off)")
_DURATION = _kind(parse_duration, "a duration such as 90d, 12h, 30m, 45s or 2w")


@attrs.frozen(kw_only=True)
class Settings:
    """Connection targets and tunables for :class:`wis2l_core.Wis2l`.

    Every field has an environment variable, named in its ``metadata["env"]``
    (``attrs.fields(Settings).namespace.metadata["env"]`` is ``"WIS2L_NAMESPACE"``); see
    :meth:`from_env` and the configuration reference in the docs.
    """

    database_url: str = attrs.field(
        default="postgresql://localhost:5432/wis2l",
        repr=_redact_one,
        metadata=_env("DATABASE_URL", _urls.database_url, _urls.database_url_from_parts),
    )
    """libpq URL of the PostgreSQL database (``DATABASE_URL``)."""
    redis_url: str = attrs.field(
        default="redis://localhost:6379/0",
        repr=_redact_one,
        metadata=_env("REDIS_URL", _urls.redis_url, _urls.redis_url_from_parts),
    )
    """Redis URL (``REDIS_URL``): ``redis://``, ``rediss://`` (TLS) or ``unix://`` for one
    server; ``redis+cluster://host:port[,host:port...]`` for Redis Cluster;
    ``redis+sentinel://host:port[,host:port...]/<master name>`` (or ``rediss+sentinel://``)
    for a Sentinel-managed master."""
    nats_urls: tuple[str, ...] = attrs.field(
        default=("nats://localhost:4222",),
        converter=_str_tuple,
        repr=_redact_many,
        metadata=_env("NATS_URL", _urls.nats_urls, _urls.nats_urls_from_parts),
    )
    """NATS servers to try, in order (``NATS_URL``, comma-separated)."""
    environment: AppEnvironment = attrs.field(
        default=AppEnvironment.DEVELOPMENT,
        converter=AppEnvironment,
        metadata=_env("WIS2L_ENV", _choice(AppEnvironment)),
    )
    """``development`` retries optional services in the background; ``production`` also
    refuses to start without a critical one (``WIS2L_ENV``)."""

    db_pool_min_size: int = attrs.field(
        default=1, metadata=_env("WIS2L_DB_POOL_MIN_SIZE", _POSITIVE_INT)
    )
    """Connections the pool keeps open (``WIS2L_DB_POOL_MIN_SIZE``)."""
    db_pool_max_size: int = attrs.field(
        default=10, metadata=_env("WIS2L_DB_POOL_MAX_SIZE", _POSITIVE_INT)
    )
    """Most connections the pool opens (``WIS2L_DB_POOL_MAX_SIZE``)."""
    db_pool_timeout: float = attrs.field(
        default=10.0, metadata=_env("WIS2L_DB_POOL_TIMEOUT", _SECONDS)
    )
    """Seconds a call waits for a free connection (``WIS2L_DB_POOL_TIMEOUT``)."""
    db_fail_fast: bool = attrs.field(default=False, metadata=_env("WIS2L_DB_FAIL_FAST", _BOOL))
    """Fail a call at once with ``ServiceUnavailable`` while the database is known to be
    unreachable, instead of waiting ``db_pool_timeout`` for a connection
    (``WIS2L_DB_FAIL_FAST``). Off by default, so calls ride through a failover; the studio
    turns it on, since a person waits for its pages."""
    db_connect_timeout: float = attrs.field(
        default=5.0, metadata=_env("WIS2L_DB_CONNECT_TIMEOUT", _SECONDS)
    )
    """Seconds to open one connection (``WIS2L_DB_CONNECT_TIMEOUT``)."""
    db_statement_timeout: float = attrs.field(
        default=30.0, metadata=_env("WIS2L_DB_STATEMENT_TIMEOUT", _SECONDS)
    )
    """Seconds one statement may run before the server cancels it; 0 disables
    (``WIS2L_DB_STATEMENT_TIMEOUT``)."""
    db_prepared_statements: bool = attrs.field(
        default=True, metadata=_env("WIS2L_DB_PREPARED_STATEMENTS", _BOOL)
    )
    """Use server-side prepared statements (``WIS2L_DB_PREPARED_STATEMENTS``). Turn off
    behind a transaction-mode pooler without prepared-statement support (PgBouncer older
    than 1.21, or ``max_prepared_statements = 0``)."""
    otel_db_query_text: bool = attrs.field(
        default=False, metadata=_env("WIS2L_OTEL_DB_QUERY_TEXT", _BOOL)
    )
    """Put each statement's SQL in its span as ``db.query.text``
    (``WIS2L_OTEL_DB_QUERY_TEXT``). Off by default. The text has placeholders, never the
    values; SQL of yours that splices literals into the text would show them."""
    sql_comments: SqlComments = attrs.field(
        default=SqlComments.OFF,
        converter=SqlComments,
        metadata=_env("WIS2L_SQL_COMMENTS", _choice(SqlComments)),
    )
    """Name each named query in a SQL comment the server sees (``WIS2L_SQL_COMMENTS``):
    ``off``, ``name`` (``/* users.find_by_id */``, stable text) or ``traceparent`` (adds
    the span's ``traceparent``; such statements are not prepared)."""
    database_direct_url: str | None = attrs.field(
        default=None,
        repr=_redact_optional,
        metadata=_env("DATABASE_DIRECT_URL", _urls.database_url),
    )
    """The PostgreSQL server itself, bypassing a pooler (``DATABASE_DIRECT_URL``): used for
    migrations (a real advisory lock) and the outbox relay's ``LISTEN``. ``None`` uses
    ``database_url`` for both."""
    migrate_lock_timeout: float = attrs.field(
        default=60.0, metadata=_env("WIS2L_MIGRATE_LOCK_TIMEOUT", _SECONDS)
    )
    """Seconds ``migrate()`` waits for another deploy's migration lock
    (``WIS2L_MIGRATE_LOCK_TIMEOUT``)."""
    migrations: tuple[MigrationSource, ...] = attrs.field(
        default=(), converter=_sources, metadata=_env("WIS2L_MIGRATIONS")
    )
    """The app's own migration folders, applied after the library's, in this order
    (``WIS2L_MIGRATIONS``: comma- or ``os.pathsep``-separated, each ``name=path`` or a
    path whose folder name is the source name). Folders are checked when used."""
    queries: tuple[Path, ...] = attrs.field(
        default=(), converter=_paths, metadata=_env("WIS2L_QUERIES")
    )
    """The app's own query folders that ``wis2l db check`` prepares besides the library's
    (``WIS2L_QUERIES``: comma- or ``os.pathsep``-separated)."""
    generated: Path | None = attrs.field(
        default=None,
        converter=attrs.converters.optional(Path),
        metadata=_env("WIS2L_GENERATED"),
    )
    """Where ``wis2l db generate`` writes the typed modules of those queries, and where
    ``wis2l db check`` looks for stale ones (``WIS2L_GENERATED``; ``None``: not checked)."""

    redis_max_connections: int = attrs.field(
        default=50, metadata=_env("WIS2L_REDIS_MAX_CONNECTIONS", _POSITIVE_INT)
    )
    """Size of the Redis connection pool (``WIS2L_REDIS_MAX_CONNECTIONS``)."""
    redis_socket_timeout: float = attrs.field(
        default=1.0, metadata=_env("WIS2L_REDIS_SOCKET_TIMEOUT", _SECONDS)
    )
    """Seconds one Redis command may take before it counts as a miss
    (``WIS2L_REDIS_SOCKET_TIMEOUT``)."""
    redis_connect_timeout: float = attrs.field(
        default=1.0, metadata=_env("WIS2L_REDIS_CONNECT_TIMEOUT", _SECONDS)
    )
    """Seconds to open a Redis connection (``WIS2L_REDIS_CONNECT_TIMEOUT``)."""

    nats_connect_timeout: float = attrs.field(
        default=2.0, metadata=_env("WIS2L_NATS_CONNECT_TIMEOUT", _SECONDS)
    )
    """Seconds to connect to NATS (``WIS2L_NATS_CONNECT_TIMEOUT``)."""
    stream_name: str = attrs.field(
        default="WIS2L",
        validator=_name_validator("a JetStream stream name"),
        metadata=_env("WIS2L_STREAM"),
    )
    """JetStream stream that holds the events (``WIS2L_STREAM``): 1-64 letters, digits,
    ``_`` or ``-``."""
    stream_duplicate_window: float = attrs.field(
        default=120.0, metadata=_env("WIS2L_STREAM_DUPLICATE_WINDOW", _SECONDS)
    )
    """Seconds JetStream remembers a ``Nats-Msg-Id`` (``WIS2L_STREAM_DUPLICATE_WINDOW``)."""
    stream_replicas: int = attrs.field(
        default=1,
        validator=_replicas_validator,
        metadata=_env("WIS2L_STREAM_REPLICAS", _POSITIVE_INT),
    )
    """Replicas of the JetStream stream, 1-5 (``WIS2L_STREAM_REPLICAS``); more than 1
    needs a NATS cluster with at least that many JetStream servers."""

    outbox_partitions: int = attrs.field(
        default=16,
        validator=_partitions_validator,
        metadata=_env("WIS2L_OUTBOX_PARTITIONS", _POSITIVE_INT),
    )
    """Partitions the outbox is split into by project, 1-1024: relays in several processes
    share them out (``WIS2L_OUTBOX_PARTITIONS``). Every process of a deployment must use
    the same number."""
    outbox_relay: bool = attrs.field(default=True, metadata=_env("WIS2L_OUTBOX_RELAY", _BOOL))
    """Run the outbox relay inside this runtime (``WIS2L_OUTBOX_RELAY``). ``false`` when
    ``wis2l relay`` processes publish the outbox instead: the runtime still writes events
    and runs subscribers, and its ``outbox`` health check still measures the backlog."""
    events_retention: timedelta | None = attrs.field(
        default=None, metadata=_env("WIS2L_EVENTS_RETENTION", _DURATION)
    )
    """How long published events stay in the audit log; ``wis2l db prune`` removes older
    ones (``WIS2L_EVENTS_RETENTION``, e.g. ``90d``, ``12h``, ``2w``). ``None`` keeps
    everything. Unpublished events are never removed."""

    oidc_issuer: str | None = attrs.field(default=None, metadata=_env("WIS2L_OIDC_ISSUER"))
    """The OpenID Connect issuer whose tokens ``wis.identity`` accepts, e.g.
    ``https://nocturnaid.org`` (``WIS2L_OIDC_ISSUER``); discovery is read from
    ``<issuer>/.well-known/openid-configuration``. ``None``: ``wis.identity`` raises
    ``ConfigError`` on use."""
    oidc_audience: str | None = attrs.field(default=None, metadata=_env("WIS2L_OIDC_AUDIENCE"))
    """The audience a token's ``aud`` must contain (``WIS2L_OIDC_AUDIENCE``); required
    with an issuer."""
    oidc_algorithms: tuple[str, ...] = attrs.field(
        default=("RS256", "ES256", "EdDSA", "PS256"),
        converter=_str_tuple,
        metadata=_env("WIS2L_OIDC_ALGORITHMS", _comma_list),
    )
    """Signature algorithms accepted (``WIS2L_OIDC_ALGORITHMS``, comma-separated). ``none``
    and the HMAC family (``HS*``) are refused: a public key must never act as a secret."""
    oidc_leeway: float = attrs.field(default=60.0, metadata=_env("WIS2L_OIDC_LEEWAY", _SECONDS))
    """Seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``
    (``WIS2L_OIDC_LEEWAY``)."""
    oidc_role_claim: str | None = attrs.field(default=None, metadata=_env("WIS2L_OIDC_ROLE_CLAIM"))
    """A claim that sets the user's role at sign-in (``WIS2L_OIDC_ROLE_CLAIM``). Unset by
    default: roles live in ``users.role``, so an issuer cannot grant admin by accident."""
    oidc_first_sign_in: FirstSignIn = attrs.field(
        default=FirstSignIn.CREATE,
        converter=FirstSignIn,
        metadata=_env("WIS2L_OIDC_FIRST_SIGN_IN", _choice(FirstSignIn)),
    )
    """What a token with an unknown ``sub`` does (``WIS2L_OIDC_FIRST_SIGN_IN``):
    ``create`` the user from its ``email`` and ``name`` claims, or ``refuse`` it."""
    oidc_trust_unverified_email: bool = attrs.field(
        default=False, metadata=_env("WIS2L_OIDC_TRUST_UNVERIFIED_EMAIL", _BOOL)
    )
    """Use a token's ``email`` claim even without ``email_verified: true``
    (``WIS2L_OIDC_TRUST_UNVERIFIED_EMAIL``). Off by default: an issuer that lets anyone
    type any address would let a stranger claim another person's e-mail."""

    namespace: str = attrs.field(
        default="wis2l",
        validator=_name_validator("a Redis key and NATS subject prefix"),
        metadata=_env("WIS2L_NAMESPACE"),
    )
    """Prefix of Redis keys (``wis2l:<service>:...``) and NATS subjects (``wis2l.<entity>.
    <action>``); tests and side-by-side apps give each their own (``WIS2L_NAMESPACE``).
    1-64 letters, digits, ``_`` or ``-``."""

    health_timeout: float = attrs.field(
        default=2.0, metadata=_env("WIS2L_HEALTH_TIMEOUT", _SECONDS)
    )
    """Seconds each health check may take (``WIS2L_HEALTH_TIMEOUT``)."""
    shutdown_timeout: float = attrs.field(
        default=25.0, metadata=_env("WIS2L_SHUTDOWN_TIMEOUT", _SECONDS)
    )
    """Seconds ``stop()`` waits for in-flight handlers (``WIS2L_SHUTDOWN_TIMEOUT``)."""
    critical_services: frozenset[str] = attrs.field(
        default=frozenset({"database"}),
        converter=_str_frozenset,
        metadata=_env("WIS2L_CRITICAL_SERVICES", _comma_list),
    )
    """Services whose failure makes health ``unhealthy`` and, in production, stops start
    (``WIS2L_CRITICAL_SERVICES``, comma-separated)."""

    def __attrs_post_init__(self) -> None:
        _urls.database_url(self.database_url, "database_url")
        if self.database_direct_url is not None:
            _urls.database_url(self.database_direct_url, "database_direct_url")
        _check_oidc(self)
        _urls.redis_url(self.redis_url, "redis_url")
        if not self.nats_urls:
            raise ConfigError("nats_urls: at least one server is needed", variable="nats_urls")
        for url in self.nats_urls:
            _urls.check_nats_url(url, "nats_urls")
        if not 1 <= self.db_pool_min_size <= self.db_pool_max_size:
            raise ConfigError(
                "db_pool_min_size must be >= 1 and <= db_pool_max_size",
                variable="db_pool_min_size",
            )
        unknown = self.critical_services - set(SERVICES)
        if unknown:
            raise ConfigError(
                f"critical_services: unknown service(s) {sorted(unknown)}; "
                f"choose from {', '.join(SERVICES)}",
                variable="critical_services",
            )

    @property
    def direct_database_url(self) -> str:
        """``database_direct_url`` when set, else ``database_url``: what migrations and the
        relay's ``LISTEN`` connect to."""
        return self.database_direct_url or self.database_url

    @property
    def is_production(self) -> bool:
        """True when ``environment`` is production."""
        return self.environment is AppEnvironment.PRODUCTION

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``environ`` (default: ``os.environ``).

        Raises:
            ConfigError: a variable is malformed; ``variable`` names it.
        """
        env = _present(os.environ if environ is None else environ)
        kwargs: dict[str, object] = {}
        for field in attrs.fields(cls):
            variable = field.metadata["env"]
            if (raw := env.get(variable)) is not None:
                kwargs[field.name] = field.metadata["read"](raw, variable)
            elif (otherwise := field.metadata["otherwise"]) is not None:
                kwargs[field.name] = otherwise(env)
        try:
            return cls(**kwargs)  # type: ignore[arg-type]
        except ConfigError as exc:
            variable = _VARIABLE_OF_FIELD.get(exc.variable or "", exc.variable or "?")
            raise ConfigError(f"{variable}: {exc}", variable=variable) from None


_VARIABLE_OF_FIELD: dict[str, str] = {f.name: f.metadata["env"] for f in attrs.fields(Settings)}


def _present(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` that are set: values stripped, blank ones left out."""
    return {name: value.strip() for name, value in env.items() if value.strip()}


def _check_oidc(settings: Settings) -> None:
    refused = [a for a in settings.oidc_algorithms if a.upper().startswith("HS") or a == "none"]
    if refused:
        raise ConfigError(
            f"oidc_algorithms: {', '.join(refused)} refused: 'none' and HMAC (HS*) "
            "algorithms are never accepted",
            variable="oidc_algorithms",
        )
    if not settings.oidc_algorithms:
        raise ConfigError("oidc_algorithms: at least one is needed", variable="oidc_algorithms")
    if settings.oidc_issuer is not None:
        _urls.check_url(settings.oidc_issuer, "oidc_issuer", ("https", "http"), "issuer")
        if settings.oidc_audience is None:
            raise ConfigError(
                "oidc_audience: an issuer is set but no audience; "
                f"set {_VARIABLE_OF_FIELD['oidc_audience']}",
                variable="oidc_audience",
            )
