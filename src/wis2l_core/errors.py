"""The errors wis2l-core raises.

Every failure a caller can see is one of these; no psycopg, redis or nats exception
escapes unwrapped, and the driver's exception is kept as ``__cause__``::

    Wis2lError
     +-- NotFound              the row, parent or key does not exist
     +-- Conflict              a unique key is taken (``field`` names it)
     +-- ValidationError       bad input, refused before any I/O (``field`` names it)
     |    +-- InvalidTransition    a status change the state machine forbids
     +-- ServiceUnavailable    PostgreSQL, Redis, NATS or the token issuer cannot be reached
     +-- ConfigError           a malformed setting (``variable`` names it)
     +-- StartupError          a critical service is down at start (production mode)
     +-- MigrationError        an applied migration file changed, or a file failed to apply
     |    +-- SchemaMissing        a table the library needs is missing: run `wis2l db migrate`
     +-- Unauthenticated       no credentials, or a token that does not verify (HTTP 401;
     |                         ``code`` is the RFC 6750 error code, e.g. ``invalid_token``)
     +-- Forbidden             authenticated, but not allowed to do this (HTTP 403)

``ValidationError`` also subclasses :class:`ValueError`, ``NotFound`` :class:`LookupError`
and ``ServiceUnavailable`` :class:`ConnectionError`, so generic handlers still work.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "Conflict",
    "Forbidden",
    "InvalidTransition",
    "MigrationError",
    "NotFound",
    "SchemaMissing",
    "ServiceUnavailable",
    "StartupError",
    "Unauthenticated",
    "ValidationError",
    "Wis2lError",
]


class Wis2lError(Exception):
    """The root of every error wis2l-core raises."""


class NotFound(Wis2lError, LookupError):
    """The thing asked for does not exist (a row to update, a parent row, a session)."""


class Conflict(Wis2lError):
    """A write would break a unique key.

    Attributes:
        field: the column or key that is taken, e.g. ``"email"`` or ``"slug"``.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ValidationError(Wis2lError, ValueError):
    """Input refused before it reached a server.

    Attributes:
        field: the argument or field at fault, e.g. ``"progress"``.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidTransition(ValidationError):
    """A status change the entity's state machine does not allow.

    Attributes:
        current: the status the entity has.
        requested: the status that was asked for.
    """

    def __init__(self, message: str, *, current: str, requested: str) -> None:
        super().__init__(message, field="status")
        self.current = current
        self.requested = requested


class ServiceUnavailable(Wis2lError, ConnectionError):
    """A server (PostgreSQL, Redis or NATS) could not be reached, or did not answer in time.

    Attributes:
        service: ``"database"``, ``"redis"``, ``"nats"``, or ``"oidc"`` (the token issuer).
    """

    def __init__(self, message: str, *, service: str) -> None:
        super().__init__(message)
        self.service = service


class ConfigError(Wis2lError):
    """A setting is malformed.

    Attributes:
        variable: the environment variable (or setting) at fault, e.g. ``"REDIS_PORT"``.
    """

    def __init__(self, message: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


class StartupError(Wis2lError):
    """The runtime could not start: a critical service is down, or the embedded stack failed.

    Attributes:
        failures: service name -> a short reason, for each service that failed.
    """

    def __init__(self, message: str, *, failures: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.failures = dict(failures or {})


class MigrationError(Wis2lError):
    """Migrations cannot go on: an applied file changed (drift) or a file failed.

    Attributes:
        migration: the file's name, e.g. ``"0001_initial_schema"``.
    """

    def __init__(self, message: str, *, migration: str | None = None) -> None:
        super().__init__(message)
        self.migration = migration


class SchemaMissing(MigrationError):
    """The database lacks a table, column or function the library needs: it was never
    migrated, or is behind the installed version. The message names ``wis2l db migrate``.
    """


class Unauthenticated(Wis2lError):
    """The caller could not be identified: no credentials, or a token that is malformed,
    expired, not yet valid, for another issuer or audience, badly signed or signed with a
    refused algorithm. An issuer that cannot be reached is :class:`ServiceUnavailable`
    instead: an outage must not look like a bad token.

    Attributes:
        code: the RFC 6750 error code for ``WWW-Authenticate``: ``"invalid_token"``,
            ``"invalid_request"``, or ``None`` when no credentials were sent at all.
        reason: why a token was refused, in one stable word (the ``wis2l.auth.outcome``
            of telemetry): ``"malformed"``, ``"algorithm_refused"``, ``"wrong_issuer"``,
            ``"unknown_key"``, ``"bad_signature"``, ``"expired"``, ``"not_yet_valid"``,
            ``"wrong_audience"``, ``"missing_claim"`` or ``"invalid_claim"``; ``None``
            when no token was checked.
    """

    def __init__(
        self, message: str, *, code: str | None = "invalid_token", reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class Forbidden(Wis2lError):
    """The caller is authenticated but may not do this.

    Attributes:
        action: the refused action (an ``Action`` value), when there is one.
    """

    def __init__(self, message: str, *, action: str | None = None) -> None:
        super().__init__(message)
        self.action = action
