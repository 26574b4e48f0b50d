"""wis.identity against the dev issuer over real sockets and a real PostgreSQL/Redis:
users made on first sight (once, however many arrive together), kept in step, the role
claim, the refuse policy, sessions, the warm path, and the audit events."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets

import attrs
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from wis2l_core import Wis2l
from wis2l_core.auth.access import permissions_for
from wis2l_core.config import FirstSignIn, Settings
from wis2l_core.db.users import NO_EMAIL_DOMAIN
from wis2l_core.dev.issuer import DevIssuer
from wis2l_core.errors import ConfigError, Unauthenticated, ValidationError
from wis2l_core.models import Role, Subsystem


async def _identity_events(wis: Wis2l) -> list[tuple[str, dict[str, object]]]:
    rows = await wis.database.fetch_all(
        "SELECT type, payload FROM events WHERE subsystem = 'identity' ORDER BY seq"
    )
    return [(r["type"], r["payload"]) for r in rows]


async def test_first_token_creates_the_user_and_later_ones_keep_it_in_step(
    wis_oidc: Wis2l, oidc_issuer: DevIssuer
) -> None:
    token = oidc_issuer.mint(sub="u-1", email="ann@example.io", name="Ann")
    principal = await wis_oidc.identity.authenticate(token)
    assert principal.user.subject == "u-1"
    assert (principal.user.email, principal.user.name) == ("ann@example.io", "Ann")
    assert principal.role is Role.DEVELOPER
    assert principal.permissions == permissions_for(Role.DEVELOPER)
    assert principal.claims["sub"] == "u-1"
    again = await wis_oidc.identity.authenticate(
        oidc_issuer.mint(sub="u-1", email="ann@new.example.io", name="Ann B")
    )
    assert again.user.id == principal.user.id
    assert (again.user.email, again.user.name) == ("ann@new.example.io", "Ann B")
    stored = await wis_oidc.users.find_by_subject("u-1")
    assert stored is not None
    assert stored.email == "ann@new.example.io"
    events = await _identity_events(wis_oidc)
    assert [t for t, _ in events] == ["user.created"]  # authenticate records no sign-in
    assert events[0][1]["project_id"] is None
    assert events[0][1]["sub"] == "u-1"


async def test_concurrent_first_sign_ins_make_one_user(
    wis_oidc: Wis2l, oidc_issuer: DevIssuer
) -> None:
    tokens = [oidc_issuer.mint(sub="racer", email="r@example.io", name="R") for _ in range(20)]
    principals = await asyncio.gather(*(wis_oidc.identity.authenticate(t) for t in tokens))
    assert len({p.user.id for p in principals}) == 1
    count = await wis_oidc.database.fetch_val("SELECT count(*) FROM users WHERE subject = 'racer'")
    assert count == 1
    created = [t for t, _ in await _identity_events(wis_oidc) if t == "user.created"]
    assert created == ["user.created"]


async def test_sign_in_opens_a_session_and_records_it(
    wis_oidc: Wis2l, oidc_issuer: DevIssuer
) -> None:
    token = oidc_issuer.mint(sub="s-1", email="s@example.io", name="S")
    principal, session = await wis_oidc.identity.sign_in(token)
    assert session.user_id == principal.user.id
    from_cookie = await wis_oidc.identity.from_session(session.token)
    assert from_cookie.user == principal.user
    assert from_cookie.claims["sub"] == "s-1"
    types = [t for t, _ in await _identity_events(wis_oidc)]
    assert types == ["user.created", "user.signed_in"]
    await wis_oidc.identity.sign_in(token)
    types = [t for t, _ in await _identity_events(wis_oidc)]
    assert types == ["user.created", "user.signed_in", "user.signed_in"]
    assert await wis_oidc.identity.sign_out(session.token)
    with pytest.raises(Unauthenticated):
        await wis_oidc.identity.from_session(session.token)
    with pytest.raises(Unauthenticated):
        await wis_oidc.identity.from_session("not-a-session")


async def test_the_role_claim_sets_the_role_and_records_the_change(
    wis_oidc: Wis2l, oidc_issuer: DevIssuer
) -> None:
    p = await wis_oidc.identity.authenticate(
        oidc_issuer.mint(sub="r-1", email="a@example.io", name="A", role="admin")
    )
    assert p.role is Role.ADMIN
    p = await wis_oidc.identity.authenticate(
        oidc_issuer.mint(sub="r-1", email="a@example.io", name="A", role="viewer")
    )
    assert p.role is Role.VIEWER
    assert p.permissions == permissions_for(Role.VIEWER)
    events = await _identity_events(wis_oidc)
    assert [t for t, _ in events] == ["user.created", "user.role_changed"]
    assert (events[1][1]["previous_role"], events[1][1]["role"]) == ("admin", "viewer")
    # an unknown role name changes nothing
    p = await wis_oidc.identity.authenticate(
        oidc_issuer.mint(sub="r-1", email="a@example.io", name="A", role="root")
    )
    assert p.role is Role.VIEWER


async def test_without_a_role_claim_the_token_cannot_grant_a_role(
    wis2l_oidc_settings: Settings, oidc_issuer: DevIssuer
) -> None:
    settings = attrs.evolve(wis2l_oidc_settings, oidc_role_claim=None)
    async with Wis2l(settings) as wis:
        p = await wis.identity.authenticate(
            oidc_issuer.mint(sub="x", email="x@example.io", name="X", role="admin")
        )
        assert p.role is Role.DEVELOPER
        await wis.identity.aclose()


async def test_repository_role_changes_are_recorded_and_forget_shows_them(
    wis_oidc: Wis2l, oidc_issuer: DevIssuer
) -> None:
    token = oidc_issuer.mint(sub="f-1", email="f@example.io", name="F")
    p = await wis_oidc.identity.authenticate(token)
    await wis_oidc.users.update(p.user.id, role="admin")
    assert (await wis_oidc.identity.authenticate(token)).role is Role.DEVELOPER  # cached
    wis_oidc.identity.forget("f-1")
    assert (await wis_oidc.identity.authenticate(token)).role is Role.ADMIN
    await wis_oidc.users.update(p.user.id, name="same role")
    types = [t for t, _ in await _identity_events(wis_oidc)]
    assert types == ["user.created", "user.role_changed"]


async def test_the_warm_path_asks_no_database(wis_oidc: Wis2l, oidc_issuer: DevIssuer) -> None:
    token = oidc_issuer.mint(sub="w-1", email="w@example.io", name="W")
    await wis_oidc.identity.authenticate(token)
    await wis_oidc.database.execute("UPDATE users SET name = 'changed' WHERE subject = 'w-1'")
    assert (await wis_oidc.identity.authenticate(token)).user.name == "W"  # from memory
    # new claims are a change: the database is asked and put back in step
    p = await wis_oidc.identity.authenticate(
        oidc_issuer.mint(sub="w-1", email="w@example.io", name="W2")
    )
    assert p.user.name == "W2"


async def test_refuse_policy_and_missing_claims(
    wis2l_oidc_settings: Settings, oidc_issuer: DevIssuer
) -> None:
    settings = attrs.evolve(wis2l_oidc_settings, oidc_first_sign_in=FirstSignIn.REFUSE)
    async with Wis2l(settings) as wis:
        with pytest.raises(Unauthenticated, match="unknown subject"):
            await wis.identity.authenticate(
                oidc_issuer.mint(sub="new", email="n@example.io", name="N")
            )
        await wis.users.create(email="k@example.io", name="K", subject="known")
        p = await wis.identity.authenticate(oidc_issuer.mint(sub="known", name="K2"))
        assert (p.user.email, p.user.name) == ("k@example.io", "K2")
        assert await wis.database.fetch_val("SELECT count(*) FROM users") == 1
        await wis.identity.aclose()


def _refused_field(exc: Unauthenticated) -> str | None:
    """The field a claims refusal names: its cause's, and in its message too."""
    cause = exc.__cause__
    assert isinstance(cause, ValidationError), exc
    assert f"({cause.field})" in str(exc)
    return cause.field


async def test_a_new_user_without_a_usable_email_gets_a_placeholder(
    wis_oidc: Wis2l, oidc_issuer: DevIssuer
) -> None:
    p = await wis_oidc.identity.authenticate(oidc_issuer.mint(sub="no-mail", name="N"))
    assert p.user.email == f"{p.user.id.hex}@{NO_EMAIL_DOMAIN}"
    assert p.user.name == "N"
    p = await wis_oidc.identity.authenticate(oidc_issuer.mint(sub="no-name", email="nn@ex.io"))
    assert p.user.name == "nn"
    with pytest.raises(Unauthenticated) as refused:
        await wis_oidc.identity.authenticate(oidc_issuer.mint(sub="nothing"))
    assert _refused_field(refused.value) == "name"
    assert await wis_oidc.users.find_by_subject("nothing") is None
    # a later token with a usable address replaces the placeholder
    p = await wis_oidc.identity.authenticate(
        oidc_issuer.mint(sub="no-mail", email="found@ex.io", name="N")
    )
    assert p.user.email == "found@ex.io"


async def test_a_known_user_signs_in_with_a_token_without_email_or_name(
    wis_oidc: Wis2l, oidc_issuer: DevIssuer
) -> None:
    """What ``wis2l dev token --sub ...`` mints: only the subject. The user it names
    exists, so it signs in and keeps what is stored."""
    made = await wis_oidc.users.create(email="k@example.io", name="Kay", subject="k|1")
    p = await wis_oidc.identity.authenticate(oidc_issuer.mint(sub="k|1"))
    assert p.user == made
    principal, _ = await wis_oidc.identity.sign_in(oidc_issuer.mint(sub="k|1"))
    assert principal.user.id == made.id


async def test_an_unverified_email_is_not_used_unless_trusted(
    wis_oidc: Wis2l, wis2l_oidc_settings: Settings, oidc_issuer: DevIssuer
) -> None:
    """A stranger's token claiming the owner's address (unverified) neither takes it nor
    locks the owner out of their own first sign-in."""
    squat = oidc_issuer.mint(
        sub="stranger", email="owner@example.io", name="S", email_verified=False
    )
    stranger = await wis_oidc.identity.authenticate(squat)
    assert stranger.user.email.endswith(f"@{NO_EMAIL_DOMAIN}")
    owner = await wis_oidc.identity.authenticate(
        oidc_issuer.mint(sub="owner", email="owner@example.io", name="O")
    )
    assert owner.user.email == "owner@example.io"
    # no email_verified at all is not a verification either
    bare = oidc_issuer.mint(sub="bare", email="bare@example.io", name="B", email_verified=None)
    assert (await wis_oidc.identity.authenticate(bare)).user.email.endswith(NO_EMAIL_DOMAIN)
    trusting = attrs.evolve(wis2l_oidc_settings, oidc_trust_unverified_email=True)
    async with Wis2l(trusting) as wis:
        trusted = oidc_issuer.mint(sub="t-1", email="t@example.io", name="T", email_verified=False)
        assert (await wis.identity.authenticate(trusted)).user.email == "t@example.io"
        await wis.identity.aclose()


async def test_another_users_email_never_refuses_a_sign_in(
    wis_oidc: Wis2l, oidc_issuer: DevIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    first = await wis_oidc.users.create(email="taken@example.io", name="First", subject="n|1")
    caplog.set_level(logging.INFO, logger="wis2l_core.auth")
    newcomer = await wis_oidc.identity.authenticate(
        oidc_issuer.mint(sub="n|2", email="TAKEN@example.io", name="Second")
    )
    assert newcomer.user.email.endswith(f"@{NO_EMAIL_DOMAIN}")
    record = next(r for r in caplog.records if "belongs to another user" in r.getMessage())
    assert (record.levelno, record.sub) == (logging.INFO, "n|2")  # type: ignore[attr-defined]
    # an existing user moving to a taken address keeps the one it had
    known = await wis_oidc.identity.authenticate(
        oidc_issuer.mint(sub="n|3", email="three@example.io", name="Three")
    )
    moved = await wis_oidc.identity.authenticate(
        oidc_issuer.mint(sub="n|3", email="taken@example.io", name="Three")
    )
    assert (moved.user.id, moved.user.email) == (known.user.id, "three@example.io")
    assert await wis_oidc.users.find_by_email("taken@example.io") == first


async def test_no_issuer_is_a_config_error(wis: Wis2l) -> None:
    with pytest.raises(ConfigError):
        _ = wis.identity


def test_subsystem_of_the_identity_events() -> None:
    from wis2l_core.catalogue import UserCreated, UserRoleChanged, UserSignedIn

    for cls in (UserCreated, UserRoleChanged, UserSignedIn):
        assert cls.subsystem is Subsystem.IDENTITY


async def test_plain_http_issuer_is_refused_outside_development(
    wis2l_oidc_settings: Settings,
) -> None:
    from wis2l_core.config import AppEnvironment

    settings = attrs.evolve(wis2l_oidc_settings, environment=AppEnvironment.PRODUCTION)
    with pytest.raises(ConfigError, match="development"):
        _ = Wis2l(settings).identity
    remote = attrs.evolve(wis2l_oidc_settings, oidc_issuer="http://id.example.org")
    with pytest.raises(ConfigError, match="https"):
        _ = Wis2l(remote).identity


def _text_ok(value: object, *, max_len: int, min_len: int = 1) -> bool:
    """``users.create``'s rule for text, written out: a string of min..max characters,
    no NUL, no lone surrogate."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return min_len <= len(value) <= max_len


def _email_ok(value: object) -> bool:
    """...and for an e-mail: such text of 3..320 characters, one ``@`` with something on
    each side, a dot in the domain, no white space anywhere."""
    return _text_ok(value, max_len=320, min_len=3) and bool(
        re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", str(value))
    )


@example(email="a@b.c\n", verified=True, name="N", preferred=None)  # white space at the end
@example(email="a" * 21 + "@example.io", verified=True, name="N", preferred=None)
@given(
    email=st.none() | st.emails() | st.text(max_size=40),
    verified=st.booleans(),
    name=st.none() | st.text(max_size=220),
    preferred=st.none() | st.text(max_size=220),
)
async def test_hypothesis_claims_sign_in_exactly_when_users_create_accepts_them(
    wis_oidc: Wis2l,
    oidc_issuer: DevIssuer,
    email: str | None,
    verified: bool,
    name: str | None,
    preferred: str | None,
) -> None:
    """The acceptance model: the e-mail used is the claim when verified (else none); the
    name is the claim, else ``preferred_username``, else the e-mail's local part. Claims
    whose e-mail and name ``users.create`` accepts sign in, stored as the model says (a
    placeholder e-mail when none is usable or another user has it); the others are
    refused with the field named, and nothing is written."""
    sub = f"h-{secrets.token_hex(6)}"
    usable = email if verified else None
    local_part = email.split("@", 1)[0][:200] if email and "@" in email else None
    wanted_name = name or preferred or local_part or None
    refused_field = None
    if usable is not None and not _email_ok(usable):
        refused_field = "email"
    elif not _text_ok(wanted_name, max_len=200):
        refused_field = "name"
    taken = (
        usable is not None
        and refused_field is None
        and (await wis_oidc.users.find_by_email(usable) is not None)
    )
    token = oidc_issuer.mint(
        sub=sub, email=email, name=name, preferred_username=preferred, email_verified=verified
    )
    try:
        principal = await wis_oidc.identity.authenticate(token)
    except Unauthenticated as exc:
        refusal: Unauthenticated | None = exc
    else:
        refusal = None
    if refusal is not None:
        assert refused_field is not None, f"refused claims users.create accepts: {refusal}"
        assert _refused_field(refusal) == refused_field
        assert await wis_oidc.users.find_by_subject(sub) is None
        return
    assert refused_field is None, f"signed in although {refused_field} is refused"
    stored = await wis_oidc.users.find_by_subject(sub)
    assert stored == principal.user
    placeholder = f"{stored.id.hex}@{NO_EMAIL_DOMAIN}"
    assert stored.email == (placeholder if usable is None or taken else usable)
    assert stored.name == wanted_name
