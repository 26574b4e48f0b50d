"""The dev OIDC issuer: what it serves over HTTP, its persisted state and `wis2l dev
token`, and the embedded stack running it so `wis.identity` works out of the box."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from wis2l_core import Wis2l
from wis2l_core.cli import main
from wis2l_core.dev import EmbeddedStack
from wis2l_core.dev.issuer import ROLE_CLAIM, STATE_FILE, DevIssuer


def _verify(issuer: DevIssuer, token: str) -> dict[str, object]:
    jwks = httpx.get(issuer.jwks_uri).json()
    return dict(jwt.decode(token, KeySet.import_key_set(jwks)).claims)


def test_it_serves_discovery_and_public_keys() -> None:
    with DevIssuer() as issuer:
        discovery = httpx.get(f"{issuer.issuer}/.well-known/openid-configuration")
        assert discovery.json()["issuer"] == issuer.issuer
        assert discovery.json()["jwks_uri"] == issuer.jwks_uri
        answer = httpx.get(issuer.jwks_uri)
        assert answer.headers["cache-control"] == "public, max-age=300"
        keys = answer.json()["keys"]
        assert [k["kid"] for k in keys] == issuer.kids
        assert not any("d" in k or "p" in k for k in keys)  # public halves only
        assert (issuer.discovery_fetches, issuer.jwks_fetches) == (1, 1)
        assert httpx.get(f"{issuer.issuer}/nope").status_code == 404
        issuer.failing = 503
        assert httpx.get(issuer.jwks_uri).status_code == 503
        token = issuer.mint(sub="a", email="a@x.io", name="A", role="admin", ttl=60)
        issuer.failing = None
        claims = _verify(issuer, token)
        assert claims["sub"] == "a"
        assert claims[ROLE_CLAIM] == "admin"
        assert claims["aud"] == issuer.audience
        assert claims["exp"] - claims["iat"] == 60  # type: ignore[operator]
    assert not issuer.serving


def test_rotate_and_withdraw_change_the_jwks() -> None:
    with DevIssuer(algorithms=("ES256",)) as issuer:
        old = issuer.kids[0]
        new = issuer.rotate("ES256")
        token = issuer.mint(sub="a", alg="ES256")
        assert jwt.decode(token, KeySet.import_key_set(issuer.public_jwks())).header["kid"] == new
        issuer.withdraw(old)
        assert issuer.kids == [new]
        with pytest.raises(KeyError):
            issuer.withdraw(old)


def test_state_survives_a_restart_and_mints_in_another_process(tmp_path: Path) -> None:
    first = DevIssuer(state_dir=tmp_path).start()
    try:
        path = tmp_path / STATE_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        minted = DevIssuer.from_state(tmp_path).mint(sub="x")
        assert _verify(first, minted)["iss"] == first.issuer
        url, kids = first.issuer, first.kids
    finally:
        first.stop()
    with DevIssuer(state_dir=tmp_path) as again:
        assert (again.issuer, again.kids) == (url, kids)  # same port, same keys
    with pytest.raises(FileNotFoundError):
        DevIssuer.from_state(tmp_path / "elsewhere")


def test_wis2l_dev_token_prints_a_token_of_the_running_issuer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with DevIssuer(state_dir=tmp_path) as issuer:
        args = ["--sub", "me", "--email", "me@x.io", "--name", "Me", "--role", "admin"]
        code = main(["dev", "token", "--data-dir", str(tmp_path), *args, "--ttl", "120"])
        assert code == 0
        claims = _verify(issuer, capsys.readouterr().out.strip())
        assert (claims["sub"], claims["email"], claims["name"]) == ("me", "me@x.io", "Me")
        assert claims[ROLE_CLAIM] == "admin"
    assert main(["dev", "token", "--data-dir", str(tmp_path / "none"), "--sub", "x"]) == 1
    assert "is `wis2l dev` running?" in capsys.readouterr().err


async def test_the_embedded_stack_runs_an_issuer_wis_identity_trusts() -> None:
    with EmbeddedStack() as stack:
        assert stack.issuer is not None
        env = stack.oidc_environ()
        assert env["WIS2L_OIDC_ISSUER"] == stack.issuer.issuer
        assert env["WIS2L_OIDC_ROLE_CLAIM"] == ROLE_CLAIM
        async with Wis2l(stack.settings(namespace=f"dev{os.getpid()}")) as wis:
            await wis.migrate()
            token = stack.issuer.mint(sub="dev-1", email="d@x.io", name="D", role="admin")
            principal = await wis.identity.authenticate(token)
            assert (principal.user.email, principal.role.value) == ("d@x.io", "admin")
            await wis.identity.aclose()
    assert stack.issuer is None
    assert stack.oidc_environ() == {}


async def test_embedded_with_another_issuer_leaves_the_role_claim_off() -> None:
    """Only the stack's own dev issuer turns the role claim on: another issuer passed to
    ``Wis2l.embedded`` cannot grant a role through its tokens (issue 19)."""
    with DevIssuer() as other:
        async with Wis2l.embedded(
            oidc_issuer=other.issuer, oidc_audience=other.audience, namespace="embother"
        ) as wis:
            assert wis.settings.oidc_issuer == other.issuer
            assert wis.settings.oidc_role_claim is None
            token = other.mint(sub="o-1", email="o@x.io", name="O", role="admin")
            principal = await wis.identity.authenticate(token)
            assert principal.role.value == "developer"
            await wis.identity.aclose()
