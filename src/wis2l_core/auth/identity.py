"""``Identity``: from a bearer token (or a session cookie) to a :class:`Principal`.

``wis.identity`` is one of these. Stable (the middleware and apps rely on it):
``authenticate(token) -> Principal``, ``sign_in(token, data=None) -> (Principal, Session)``,
``from_session(session_token) -> Principal``, ``sign_out(session_token)``,
``forget(subject=None)``, ``aclose()``, and the attributes ``keys`` (the issuer's
:class:`~wis2l_core.auth.keys.IssuerKeys`) and ``verifier``.

What is recorded (the audit log, subsystem ``identity``, through the outbox in the same
transaction as the user write): ``user.created`` when a first sign-in makes the user,
``user.role_changed`` when the role claim (``WIS2L_OIDC_ROLE_CLAIM``) changes the role,
and ``user.signed_in`` for each :meth:`Identity.sign_in`. A plain
:meth:`Identity.authenticate` (every API request) records nothing unless it creates or
changes the user: recording each request would put a database write on every call.

Which e-mail is used: the ``email`` claim only when the issuer vouches for it
(``email_verified: true``; ``WIS2L_OIDC_TRUST_UNVERIFIED_EMAIL=true`` drops that
condition), and only when no other user has it. Otherwise the stored e-mail is kept (a new
user gets a placeholder, see :data:`~wis2l_core.db.users.NO_EMAIL_DOMAIN`): a stranger's
token carrying someone's address neither takes it nor locks its owner out. Why a token
was refused, or its e-mail left aside, goes to the ``wis2l_core.auth`` log (with
``extra=``), never to the caller.

The warm path: a verified token whose user was seen less than ``user_ttl`` seconds ago
with the same e-mail, name (and role claim) costs no database round trip. A role changed
elsewhere (``wis.users.update(role=...)`` in another process) is seen within
``user_ttl``; in this process :meth:`Identity.forget` drops the cached entry at once.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from wis2l_core.auth.access import permissions_for
from wis2l_core.auth.principal import Principal
from wis2l_core.config import AppEnvironment, FirstSignIn
from wis2l_core.errors import ConfigError, Conflict, Unauthenticated, ValidationError
from wis2l_core.models import Role, User

if TYPE_CHECKING:
    from wis2l_core.auth.keys import IssuerKeys
    from wis2l_core.auth.verify import TokenVerifier
    from wis2l_core.cache.sessions import Session, SessionStore
    from wis2l_core.config import Settings
    from wis2l_core.db.users import UserRepository

__all__ = ["Identity"]

log = logging.getLogger("wis2l_core.auth")

SESSION_CLAIMS = "claims"
"""The key of the verified claims in a session's data."""


class Identity:
    """Verifies tokens of the configured issuer and maps them to users.

    No I/O happens here; keys are fetched on the first token.

    Args:
        settings: the issuer and the sign-in policy (``WIS2L_OIDC_*``).
        users: where users are found and created (``wis.users``).
        sessions: where sessions are kept (``wis.sessions``).
        user_ttl: seconds a verified user is served from memory (0: always ask the
            database).
        max_users: at most this many users are kept in memory (least recently used go).
        keys: the issuer's key set (default: made from the settings).

    Raises:
        ConfigError: no issuer (``WIS2L_OIDC_ISSUER``) is configured, the issuer URL is
            refused (not https, outside development), or the ``auth`` extra is missing.
    """

    def __init__(
        self,
        settings: Settings,
        users: UserRepository,
        sessions: SessionStore,
        *,
        user_ttl: float = 30.0,
        max_users: int = 10_000,
        keys: IssuerKeys | None = None,
    ) -> None:
        if settings.oidc_issuer is None or settings.oidc_audience is None:
            raise ConfigError(
                "wis.identity needs an issuer: set WIS2L_OIDC_ISSUER and WIS2L_OIDC_AUDIENCE",
                variable="oidc_issuer",
            )
        try:
            from wis2l_core.auth.keys import IssuerKeys
            from wis2l_core.auth.verify import TokenVerifier
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError(
                f"wis.identity needs the auth extra (pip install 'wis2l-core[auth]'): {exc}"
            ) from exc
        self._users_repo = users
        self._sessions = sessions
        self.keys: IssuerKeys = keys or IssuerKeys(
            settings.oidc_issuer,
            development=settings.environment is AppEnvironment.DEVELOPMENT,
        )
        self.verifier: TokenVerifier = TokenVerifier(
            self.keys,
            audience=settings.oidc_audience,
            algorithms=settings.oidc_algorithms,
            leeway=settings.oidc_leeway,
        )
        self.user_ttl = user_ttl
        self.max_users = max_users
        self._role_claim = settings.oidc_role_claim
        self._create = settings.oidc_first_sign_in is FirstSignIn.CREATE
        self._trust_unverified_email = settings.oidc_trust_unverified_email
        self._users: OrderedDict[str, tuple[float, tuple[Any, ...], User]] = OrderedDict()

    async def authenticate(self, token: str) -> Principal:
        """The caller a bearer token names.

        Verifies the token (see :mod:`wis2l_core.auth.verify`), then finds the user by
        ``sub``; a first sight creates it from the ``name`` and verified ``email`` claims
        (unless ``WIS2L_OIDC_FIRST_SIGN_IN=refuse``), and later ones keep e-mail and name
        in step.

        Raises:
            Unauthenticated: the token is refused, or its subject is unknown and the
                policy refuses new users, or its claims cannot make a user (the cause is
                the ``ValidationError`` naming the field).
            ServiceUnavailable: the issuer's keys or the database cannot be reached.
        """
        claims = await self.verifier.verify(token)
        user = await self._user(claims, record_sign_in=False)
        return self._principal(user, claims)

    async def sign_in(
        self, token: str, data: Mapping[str, Any] | None = None
    ) -> tuple[Principal, Session]:
        """Authenticate ``token``, record the sign-in, and open a session (Redis) whose
        token a browser app can keep in an HttpOnly cookie (see :meth:`from_session`).

        Args:
            token: the bearer token.
            data: more JSON data to keep with the session (the verified claims are kept
                under ``"claims"``).

        Raises:
            Unauthenticated: as :meth:`authenticate`.
            ServiceUnavailable: the issuer, the database or Redis cannot be reached.
        """
        claims = await self.verifier.verify(token)
        user = await self._user(claims, record_sign_in=True)
        session = await self._sessions.create(user.id, {**(data or {}), SESSION_CLAIMS: claims})
        return self._principal(user, claims), session

    async def from_session(self, session_token: str) -> Principal:
        """The caller a session token (from :meth:`sign_in`) names.

        The user is read fresh (or from the ``user_ttl`` cache), so a role change shows;
        a deleted user ends the session's use.

        Raises:
            Unauthenticated: the session is unknown, expired or revoked, or its user is
                gone.
            ServiceUnavailable: Redis or the database cannot be reached.
        """
        session = await self._sessions.get(session_token)
        if session is None:
            raise Unauthenticated("the session is unknown, expired or revoked")
        claims = session.data.get(SESSION_CLAIMS)
        if not isinstance(claims, Mapping) or not isinstance(claims.get("sub"), str):
            raise Unauthenticated("the session was not opened by sign_in")
        user = self._cached(claims["sub"], None)
        if user is None or user.id != session.user_id:
            user = await self._users_repo.find_by_id(session.user_id)
            if user is None:
                raise Unauthenticated("the session's user no longer exists")
            self._remember(user, None)
        return self._principal(user, claims)

    async def sign_out(self, session_token: str) -> bool:
        """Revoke a session; ``False`` if it was unknown."""
        return await self._sessions.revoke(session_token)

    def forget(self, subject: str | None = None) -> None:
        """Drop the cached user of ``subject`` (all of them when ``None``), so the next
        token reads the database (after changing a role in this process, say)."""
        if subject is None:
            self._users.clear()
        else:
            self._users.pop(subject, None)

    async def aclose(self) -> None:
        """Cancel a key fetch in flight (idempotent). Optional: nothing else is held
        open, each key fetch opens and closes its own HTTP client."""
        await self.keys.aclose()

    # -- internals -------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        """The issuer whose tokens are accepted (``WIS2L_OIDC_ISSUER``)."""
        return self.verifier.issuer

    def _wanted(self, claims: Mapping[str, Any]) -> tuple[Any, ...]:
        """What the stored user must agree with: the usable e-mail, the name, and the
        claimed role."""
        return (self._email(claims), claims.get("name"), self._claimed_role(claims))

    def _email(self, claims: Mapping[str, Any]) -> object:
        """The ``email`` claim if the issuer verified it (or unverified ones are trusted),
        else ``None``."""
        email = claims.get("email")
        if email is None or self._trust_unverified_email or claims.get("email_verified") is True:
            return email
        log.debug(
            "token e-mail not verified: not used",
            extra={"sub": claims.get("sub"), "issuer": self.issuer},
        )
        return None

    def _claimed_role(self, claims: Mapping[str, Any]) -> Role | None:
        if self._role_claim is None:
            return None
        value = claims.get(self._role_claim)
        try:
            return Role(value) if isinstance(value, str) else None
        except ValueError:
            return None  # an unknown role name changes nothing

    def _cached(self, subject: str, wanted: tuple[Any, ...] | None) -> User | None:
        entry = self._users.get(subject)
        if entry is None:
            return None
        until, seen, user = entry
        if time.monotonic() >= until or (wanted is not None and seen != wanted):
            self._users.pop(subject, None)
            return None
        self._users.move_to_end(subject)
        return user

    def _remember(self, user: User, wanted: tuple[Any, ...] | None) -> None:
        if self.user_ttl <= 0:
            return
        if wanted is None:
            wanted = (user.email, user.name, None)
        self._users[user.subject] = (time.monotonic() + self.user_ttl, wanted, user)
        self._users.move_to_end(user.subject)
        while len(self._users) > self.max_users:
            self._users.popitem(last=False)

    async def _user(self, claims: Mapping[str, Any], *, record_sign_in: bool) -> User:
        subject: str = claims["sub"]
        wanted = self._wanted(claims)
        if not record_sign_in:
            user = self._cached(subject, wanted)
            if user is not None:
                return user
        email, name, role = wanted
        name = name or None
        if name is None and self._create:
            name = _fallback_name(claims.get("preferred_username"), claims.get("email"))
        sign_in = functools.partial(
            self._users_repo.sign_in,
            subject,
            name=name,
            role=role,
            create=self._create,
            record_sign_in=record_sign_in,
        )
        try:
            try:
                found = await sign_in(email=email)
            except Conflict as exc:
                if exc.field != "email":
                    raise
                log.info(
                    "token e-mail belongs to another user: not used",
                    extra={"sub": subject, "issuer": self.issuer},
                )
                found = await sign_in(email=None)
        except ValidationError as exc:
            log.info(
                "token refused: its claims cannot make a user",
                extra={"sub": subject, "field": exc.field, "reason": str(exc)},
            )
            raise Unauthenticated(
                f"the token's claims cannot make a user ({exc.field}): {exc}"
            ) from exc
        if found is None:
            log.info("token refused: unknown subject, new users refused", extra={"sub": subject})
            raise Unauthenticated(f"unknown subject {subject!r}: new users are refused")
        user = found[0]
        self._remember(user, wanted)
        return user

    def _principal(self, user: User, claims: Mapping[str, Any]) -> Principal:
        return Principal(user, claims, permissions_for(user.role))


def _fallback_name(preferred_username: object, email: object) -> object:
    """A new user's name when the token has none: ``preferred_username``, else the
    ``email`` claim's local part (verified or not: it only names; cut to the 200
    characters a name may have), else ``None``."""
    if preferred_username:
        return preferred_username
    if isinstance(email, str) and "@" in email:
        return email.split("@", 1)[0][:200] or None
    return None
