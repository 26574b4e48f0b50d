"""wis.identity against the dev issuer over real sockets and a real PostgreSQL/Redis:
users made on first sight (once, however many arrive together), kept in step, the role
claim, the refuse policy, sessions, the warm path, and the audit events."""

from __future__ import annotations

import asyncio
import secrets

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wis2l_core import Wis2l
from wis2l_core.auth.access import permissions_for
from wis2l_core.config import FirstSignIn, Settings
from wis2l_core.dev.issuer import DevIssuer
from wis2l_core.errors import ConfigError, Conflict, Unauthenticated
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


async def test_a_new_user_needs_an_email(wis_oidc: Wis2l, oidc_issuer: DevIssuer) -> None:
    with pytest.raises(Unauthenticated, match="email"):
        await wis_oidc.identity.authenticate(oidc_issuer.mint(sub="no-mail", name="N"))
    p = await wis_oidc.identity.authenticate(oidc_issuer.mint(sub="no-name", email="nn@ex.io"))
    assert p.user.name == "nn"
    assert await wis_oidc.users.find_by_subject("no-mail") is None


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


@given(
    email=st.emails() | st.text(max_size=40),
    name=st.none() | st.text(max_size=220),
)
async def test_hypothesis_claims_make_a_user_in_step_or_a_clean_refusal(
    wis_oidc: Wis2l, oidc_issuer: DevIssuer, email: str, name: str | None
) -> None:
    """Any e-mail/name claims: the user stored equals the claims, or Unauthenticated
    (malformed claims) or Conflict (another user has the e-mail: examples share the
    database) and nothing written; never another error."""
    sub = f"h-{secrets.token_hex(6)}"
    token = oidc_issuer.mint(sub=sub, email=email, name=name)
    try:
        principal = await wis_oidc.identity.authenticate(token)
    except (Unauthenticated, Conflict) as exc:
        assert await wis_oidc.users.find_by_subject(sub) is None
        if isinstance(exc, Conflict):
            assert await wis_oidc.users.find_by_email(email) is not None
        return
    stored = await wis_oidc.users.find_by_subject(sub)
    assert stored == principal.user
    assert stored.email == email
    assert stored.name == (name or email.split("@", 1)[0])
