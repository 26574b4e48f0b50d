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
from typing import TypeVar

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
    "parse_duration",
    "redact_url",
]

_T = TypeVar("_T")


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


@attrs.frozen(kw_only=True)
class Settings:
    """Connection targets and tunables for :class:`wis2l_core.Wis2l`.

    Every field has an environment variable; see :meth:`from_env` and the
    configuration reference in the docs.
    """

    database_url: str = attrs.field(default="postgresql://localhost:5432/wis2l", repr=_redact_one)
    """libpq URL of the PostgreSQL database (``DATABASE_URL``)."""
    redis_url: str = attrs.field(default="redis://localhost:6379/0", repr=_redact_one)
    """Redis URL (``REDIS_URL``): ``redis://``, ``rediss://`` (TLS) or ``unix://`` for one
    server; ``redis+cluster://host:port[,host:port...]`` for Redis Cluster;
    ``redis+sentinel://host:port[,host:port...]/<master name>`` (or ``rediss+sentinel://``)
    for a Sentinel-managed master."""
    nats_urls: tuple[str, ...] = attrs.field(
        default=("nats://localhost:4222",), converter=_str_tuple, repr=_redact_many
    )
    """NATS servers to try, in order (``NATS_URL``, comma-separated)."""
    environment: AppEnvironment = attrs.field(
        default=AppEnvironment.DEVELOPMENT, converter=AppEnvironment
    )
    """``development`` retries optional services in the background; ``production`` also
    refuses to start without a critical one (``WIS2L_ENV``)."""

    db_pool_min_size: int = 1
    """Connections the pool keeps open (``WIS2L_DB_POOL_MIN_SIZE``)."""
    db_pool_max_size: int = 10
    """Most connections the pool opens (``WIS2L_DB_POOL_MAX_SIZE``)."""
    db_pool_timeout: float = 10.0
    """Seconds a call waits for a free connection (``WIS2L_DB_POOL_TIMEOUT``)."""
    db_connect_timeout: float = 5.0
    """Seconds to open one connection (``WIS2L_DB_CONNECT_TIMEOUT``)."""
    db_statement_timeout: float = 30.0
    """Seconds one statement may run before the server cancels it; 0 disables
    (``WIS2L_DB_STATEMENT_TIMEOUT``)."""
    db_prepared_statements: bool = True
    """Use server-side prepared statements (``WIS2L_DB_PREPARED_STATEMENTS``). Turn off
    behind a transaction-mode pooler without prepared-statement support (PgBouncer older
    than 1.21, or ``max_prepared_statements = 0``)."""
    database_direct_url: str | None = attrs.field(default=None, repr=_redact_optional)
    """The PostgreSQL server itself, bypassing a pooler (``DATABASE_DIRECT_URL``): used for
    migrations (a real advisory lock) and the outbox relay's ``LISTEN``. ``None`` uses
    ``database_url`` for both."""
    migrate_lock_timeout: float = 60.0
    """Seconds ``migrate()`` waits for another deploy's migration lock
    (``WIS2L_MIGRATE_LOCK_TIMEOUT``)."""
    migrations: tuple[MigrationSource, ...] = attrs.field(default=(), converter=_sources)
    """The app's own migration folders, applied after the library's, in this order
    (``WIS2L_MIGRATIONS``: comma- or ``os.pathsep``-separated, each ``name=path`` or a
    path whose folder name is the source name). Folders are checked when used."""
    queries: tuple[Path, ...] = attrs.field(default=(), converter=_paths)
    """The app's own query folders that ``wis2l db check`` prepares besides the library's
    (``WIS2L_QUERIES``: comma- or ``os.pathsep``-separated)."""

    redis_max_connections: int = 50
    """Size of the Redis connection pool (``WIS2L_REDIS_MAX_CONNECTIONS``)."""
    redis_socket_timeout: float = 1.0
    """Seconds one Redis command may take before it counts as a miss
    (``WIS2L_REDIS_SOCKET_TIMEOUT``)."""
    redis_connect_timeout: float = 1.0
    """Seconds to open a Redis connection (``WIS2L_REDIS_CONNECT_TIMEOUT``)."""

    nats_connect_timeout: float = 2.0
    """Seconds to connect to NATS (``WIS2L_NATS_CONNECT_TIMEOUT``)."""
    stream_name: str = attrs.field(
        default="WIS2L", validator=_name_validator("a JetStream stream name")
    )
    """JetStream stream that holds the events (``WIS2L_STREAM``): 1-64 letters, digits,
    ``_`` or ``-``."""
    stream_duplicate_window: float = 120.0
    """Seconds JetStream remembers a ``Nats-Msg-Id`` (``WIS2L_STREAM_DUPLICATE_WINDOW``)."""
    stream_replicas: int = attrs.field(default=1, validator=_replicas_validator)
    """Replicas of the JetStream stream, 1-5 (``WIS2L_STREAM_REPLICAS``); more than 1
    needs a NATS cluster with at least that many JetStream servers."""

    outbox_partitions: int = attrs.field(default=16, validator=_partitions_validator)
    """Partitions the outbox is split into by project, 1-1024: relays in several processes
    share them out (``WIS2L_OUTBOX_PARTITIONS``). Every process of a deployment must use
    the same number."""
    events_retention: timedelta | None = None
    """How long published events stay in the audit log; ``wis2l db prune`` removes older
    ones (``WIS2L_EVENTS_RETENTION``, e.g. ``90d``, ``12h``, ``2w``). ``None`` keeps
    everything. Unpublished events are never removed."""

    oidc_issuer: str | None = None
    """The OpenID Connect issuer whose tokens ``wis.identity`` accepts, e.g.
    ``https://nocturnaid.org`` (``WIS2L_OIDC_ISSUER``); discovery is read from
    ``<issuer>/.well-known/openid-configuration``. ``None``: ``wis.identity`` raises
    ``ConfigError`` on use."""
    oidc_audience: str | None = None
    """The audience a token's ``aud`` must contain (``WIS2L_OIDC_AUDIENCE``); required
    with an issuer."""
    oidc_algorithms: tuple[str, ...] = attrs.field(
        default=("RS256", "ES256", "EdDSA", "PS256"), converter=_str_tuple
    )
    """Signature algorithms accepted (``WIS2L_OIDC_ALGORITHMS``, comma-separated). ``none``
    and the HMAC family (``HS*``) are refused: a public key must never act as a secret."""
    oidc_leeway: float = 60.0
    """Seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``
    (``WIS2L_OIDC_LEEWAY``)."""
    oidc_role_claim: str | None = None
    """A claim that sets the user's role at sign-in (``WIS2L_OIDC_ROLE_CLAIM``). Unset by
    default: roles live in ``users.role``, so an issuer cannot grant admin by accident."""
    oidc_first_sign_in: FirstSignIn = attrs.field(default=FirstSignIn.CREATE, converter=FirstSignIn)
    """What a token with an unknown ``sub`` does (``WIS2L_OIDC_FIRST_SIGN_IN``):
    ``create`` the user from its ``email`` and ``name`` claims, or ``refuse`` it."""
    oidc_trust_unverified_email: bool = False
    """Use a token's ``email`` claim even without ``email_verified: true``
    (``WIS2L_OIDC_TRUST_UNVERIFIED_EMAIL``). Off by default: an issuer that lets anyone
    type any address would let a stranger claim another person's e-mail."""

    namespace: str = attrs.field(
        default="wis2l", validator=_name_validator("a Redis key and NATS subject prefix")
    )
    """Prefix of Redis keys (``wis2l:<service>:...``) and NATS subjects (``wis2l.<entity>.
    <action>``); tests and side-by-side apps give each their own (``WIS2L_NAMESPACE``).
    1-64 letters, digits, ``_`` or ``-``."""

    health_timeout: float = 2.0
    """Seconds each health check may take (``WIS2L_HEALTH_TIMEOUT``)."""
    shutdown_timeout: float = 25.0
    """Seconds ``stop()`` waits for in-flight handlers (``WIS2L_SHUTDOWN_TIMEOUT``)."""
    critical_services: frozenset[str] = attrs.field(
        default=frozenset({"database"}), converter=_str_frozenset
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
        kwargs: dict[str, object] = {
            "database_url": _urls.database_url(url, "DATABASE_URL")
            if (url := env.get("DATABASE_URL"))
            else _urls.database_url_from_parts(env),
            "redis_url": _urls.redis_url(url, "REDIS_URL")
            if (url := env.get("REDIS_URL"))
            else _urls.redis_url_from_parts(env),
            "nats_urls": _urls.nats_urls(url, "NATS_URL")
            if (url := env.get("NATS_URL"))
            else _urls.nats_urls_from_parts(env),
        }
        if raw_env := _get(env, "WIS2L_ENV"):
            try:
                kwargs["environment"] = AppEnvironment(raw_env.lower())
            except ValueError:
                raise ConfigError(
                    f"WIS2L_ENV must be 'development' or 'production', not {raw_env!r}",
                    variable="WIS2L_ENV",
                ) from None
        for field, variable, parse in _TUNABLES:
            raw = _get(env, variable)
            if raw is not None:
                kwargs[field] = _parse(variable, raw, parse)
        if raw_direct := _get(env, "DATABASE_DIRECT_URL"):
            kwargs["database_direct_url"] = _urls.database_url(raw_direct, "DATABASE_DIRECT_URL")
        kwargs.update(_oidc(env))
        if raw_migrations := _get(env, "WIS2L_MIGRATIONS"):
            kwargs["migrations"] = raw_migrations
        if raw_queries := _get(env, "WIS2L_QUERIES"):
            kwargs["queries"] = raw_queries
        if raw_critical := _get(env, "WIS2L_CRITICAL_SERVICES"):
            kwargs["critical_services"] = frozenset(
                s.strip() for s in raw_critical.split(",") if s.strip()
            )
        try:
            return cls(**kwargs)  # type: ignore[arg-type]
        except ConfigError as exc:
            variable = _VARIABLE_OF_FIELD.get(exc.variable or "", exc.variable or "?")
            raise ConfigError(f"{variable}: {exc}", variable=variable) from None


def _oidc(env: Mapping[str, str]) -> dict[str, object]:
    kwargs: dict[str, object] = {}
    for field, variable in _OPTIONAL_STRINGS:
        if raw := _get(env, variable):
            kwargs[field] = raw
    if raw_algorithms := _get(env, "WIS2L_OIDC_ALGORITHMS"):
        kwargs["oidc_algorithms"] = tuple(a.strip() for a in raw_algorithms.split(",") if a.strip())
    if raw_policy := _get(env, "WIS2L_OIDC_FIRST_SIGN_IN"):
        try:
            kwargs["oidc_first_sign_in"] = FirstSignIn(raw_policy.lower())
        except ValueError:
            raise ConfigError(
                f"WIS2L_OIDC_FIRST_SIGN_IN must be 'create' or 'refuse', not {raw_policy!r}",
                variable="WIS2L_OIDC_FIRST_SIGN_IN",
            ) from None
    return kwargs


def _present(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` that are set: values stripped, blank ones left out."""
    return {name: value.strip() for name, value in env.items() if value.strip()}


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _parse(variable: str, raw: str, parse: Callable[[str], _T]) -> _T:
    try:
        return parse(raw)
    except ValueError:
        raise ConfigError(
            f"{variable} must be a {_KIND[parse]}, not {raw!r}", variable=variable
        ) from None


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


def _name(raw: str) -> str:
    return raw


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


_KIND: dict[object, str] = {
    _positive_int: "positive integer",
    _non_negative_float: "number of seconds >= 0",
    _name: "name",
    _bool: "boolean (true/false, 1/0, yes/no, on/off)",
    parse_duration: "duration such as 90d, 12h, 30m, 45s or 2w",
    int: "integer",
}

_TUNABLES: tuple[tuple[str, str, Callable[[str], object]], ...] = (
    ("db_pool_min_size", "WIS2L_DB_POOL_MIN_SIZE", _positive_int),
    ("db_pool_max_size", "WIS2L_DB_POOL_MAX_SIZE", _positive_int),
    ("db_pool_timeout", "WIS2L_DB_POOL_TIMEOUT", _non_negative_float),
    ("db_connect_timeout", "WIS2L_DB_CONNECT_TIMEOUT", _non_negative_float),
    ("db_statement_timeout", "WIS2L_DB_STATEMENT_TIMEOUT", _non_negative_float),
    ("migrate_lock_timeout", "WIS2L_MIGRATE_LOCK_TIMEOUT", _non_negative_float),
    ("redis_max_connections", "WIS2L_REDIS_MAX_CONNECTIONS", _positive_int),
    ("redis_socket_timeout", "WIS2L_REDIS_SOCKET_TIMEOUT", _non_negative_float),
    ("redis_connect_timeout", "WIS2L_REDIS_CONNECT_TIMEOUT", _non_negative_float),
    ("nats_connect_timeout", "WIS2L_NATS_CONNECT_TIMEOUT", _non_negative_float),
    ("stream_name", "WIS2L_STREAM", _name),
    ("stream_duplicate_window", "WIS2L_STREAM_DUPLICATE_WINDOW", _non_negative_float),
    ("stream_replicas", "WIS2L_STREAM_REPLICAS", _positive_int),
    ("db_prepared_statements", "WIS2L_DB_PREPARED_STATEMENTS", _bool),
    ("outbox_partitions", "WIS2L_OUTBOX_PARTITIONS", _positive_int),
    ("events_retention", "WIS2L_EVENTS_RETENTION", parse_duration),
    ("oidc_leeway", "WIS2L_OIDC_LEEWAY", _non_negative_float),
    ("oidc_trust_unverified_email", "WIS2L_OIDC_TRUST_UNVERIFIED_EMAIL", _bool),
    ("namespace", "WIS2L_NAMESPACE", _name),
    ("health_timeout", "WIS2L_HEALTH_TIMEOUT", _non_negative_float),
    ("shutdown_timeout", "WIS2L_SHUTDOWN_TIMEOUT", _non_negative_float),
)

_OPTIONAL_STRINGS: tuple[tuple[str, str], ...] = (
    ("oidc_issuer", "WIS2L_OIDC_ISSUER"),
    ("oidc_audience", "WIS2L_OIDC_AUDIENCE"),
    ("oidc_role_claim", "WIS2L_OIDC_ROLE_CLAIM"),
)

_VARIABLE_OF_FIELD: dict[str, str] = {
    "database_url": "DATABASE_URL",
    "database_direct_url": "DATABASE_DIRECT_URL",
    "oidc_algorithms": "WIS2L_OIDC_ALGORITHMS",
    "oidc_first_sign_in": "WIS2L_OIDC_FIRST_SIGN_IN",
    **dict(_OPTIONAL_STRINGS),
    "redis_url": "REDIS_URL",
    "nats_urls": "NATS_URL",
    "critical_services": "WIS2L_CRITICAL_SERVICES",
    "migrations": "WIS2L_MIGRATIONS",
    "queries": "WIS2L_QUERIES",
    **{field: variable for field, variable, _ in _TUNABLES},
}


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
                "oidc_audience: an issuer is set but no audience; set WIS2L_OIDC_AUDIENCE",
                variable="oidc_audience",
            )
