"""The ``pytest11`` entry point: real servers and a fresh, migrated database per test.

Fixtures (all names start with ``wis2l_`` except ``wis``):

- ``wis2l_servers`` (session): the servers from ``WIS2L_TEST_*_URL``, else an embedded stack.
- ``wis2l_template`` (session): a migrated template database, dropped at the end.
- ``wis2l_database_url``: a fresh database cloned from the template, dropped after the test.
- ``wis2l_settings``: :class:`~wis2l_core.Settings` for that database, with a namespace and
  stream of the test's own, so Redis keys and NATS subjects never leak between tests.
- ``wis``: a started :class:`~wis2l_core.Wis2l` on those settings (needs pytest-asyncio).
- ``oidc_issuer``: a started :class:`~wis2l_core.dev.issuer.DevIssuer` (the ``auth``
  extra): mints tokens (``mint(sub=, email=, name=, role=)``) and bad ones, rotates keys.
- ``wis2l_oidc_settings``: ``wis2l_settings`` pointed at ``oidc_issuer`` (its role claim
  too, so ``mint(role="admin")`` makes an admin).
- ``wis_oidc``: a started ``Wis2l`` on those settings: ``wis_oidc.identity`` works.
- ``wis2l_telemetry``: the library's spans and metrics of the test, in memory (needs
  ``opentelemetry-sdk``): see :mod:`wis2l_core.testing.telemetry`.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import attrs
import pytest

from wis2l_core.config import AppEnvironment, Settings
from wis2l_core.testing.servers import Servers, TemplateDatabase, find_servers

if TYPE_CHECKING:
    from wis2l_core.dev.issuer import DevIssuer

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - apps without pytest-asyncio get the sync fixtures
    pytest_asyncio = None  # type: ignore[assignment]


@pytest.fixture(scope="session")
def wis2l_servers() -> Iterator[Servers]:
    """The servers of this test session (environment or embedded)."""
    with find_servers() as servers:
        yield servers


@pytest.fixture(scope="session")
def wis2l_template(wis2l_servers: Servers) -> Iterator[TemplateDatabase]:
    """A template database with every migration applied."""
    template = TemplateDatabase(wis2l_servers.database_url)
    template.create()
    yield template
    template.drop()


@pytest.fixture
def wis2l_database_url(wis2l_template: TemplateDatabase) -> Iterator[str]:
    """URL of a fresh, migrated, empty database for this test only."""
    url = wis2l_template.clone()
    yield url
    wis2l_template.drop(url)


@pytest.fixture
def wis2l_settings(wis2l_servers: Servers, wis2l_database_url: str) -> Settings:
    """Settings for this test's database, with its own Redis namespace and NATS stream."""
    tag = secrets.token_hex(5)
    return Settings(
        database_url=wis2l_database_url,
        redis_url=wis2l_servers.redis_url,
        nats_urls=(wis2l_servers.nats_url,),
        namespace=f"t{tag}",
        stream_name=f"T{tag.upper()}",
        db_pool_min_size=1,
        db_pool_max_size=5,
    )


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def wis(wis2l_settings: Settings) -> AsyncIterator[object]:
        """A started :class:`~wis2l_core.Wis2l` on this test's database; stopped after."""
        from wis2l_core.runtime import Wis2l

        async with Wis2l(wis2l_settings) as runtime:
            yield runtime
        await drop_stream(wis2l_settings)


@pytest.fixture
def oidc_issuer() -> Iterator[DevIssuer]:
    """A local OpenID Connect issuer on a loopback port, with its own keys."""
    from wis2l_core.dev.issuer import DevIssuer

    with DevIssuer() as issuer:
        yield issuer


@pytest.fixture
def wis2l_oidc_settings(wis2l_settings: Settings, oidc_issuer: DevIssuer) -> Settings:
    """``wis2l_settings`` whose identity trusts ``oidc_issuer`` (development mode, role
    claim :data:`~wis2l_core.dev.issuer.ROLE_CLAIM`)."""
    from wis2l_core.dev.issuer import ROLE_CLAIM

    return attrs.evolve(
        wis2l_settings,
        oidc_issuer=oidc_issuer.issuer,
        oidc_audience=oidc_issuer.audience,
        oidc_role_claim=ROLE_CLAIM,
        environment=AppEnvironment.DEVELOPMENT,
    )


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def wis_oidc(wis2l_oidc_settings: Settings) -> AsyncIterator[object]:
        """A started ``Wis2l`` whose ``identity`` trusts ``oidc_issuer``; stopped after."""
        from wis2l_core.runtime import Wis2l

        async with Wis2l(wis2l_oidc_settings) as runtime:
            yield runtime
            if runtime._identity is not None:
                await runtime._identity.aclose()
        await drop_stream(wis2l_oidc_settings)


@pytest.fixture
def wis2l_telemetry() -> Iterator[object]:
    """The spans and metrics the library records during the test (``Captured``)."""
    from wis2l_core.testing.telemetry import capture

    yield from capture()


async def drop_stream(settings: Settings) -> None:
    """Delete the test's JetStream stream (dead letters live in it too), if NATS answers."""
    import nats
    from nats.js.errors import NotFoundError

    try:
        nc = await nats.connect(
            list(settings.nats_urls), connect_timeout=2, max_reconnect_attempts=0
        )
    except Exception:  # NATS down: nothing to clean
        return
    try:
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_stream(settings.stream_name)
    finally:
        await nc.close()
