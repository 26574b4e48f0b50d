"""SessionStore: create, get, sliding refresh, revoke, revoke_all; no raw token in Redis."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from tests.helpers import field_is

from wis2l_core import ServiceUnavailable, Settings, ValidationError
from wis2l_core.cache import RedisClient, Session, SessionStore

DAY_MS = 24 * 3600 * 1000


async def namespace_dump(client: RedisClient) -> list[Any]:
    """Every key and every value in the test's namespace, as raw bytes."""
    out: list[Any] = []
    async for key in client.redis.scan_iter(match=f"{client.namespace}:*"):
        out.append(key)
        out.append(await client.redis.dump(key) or b"")
        kind = await client.redis.type(key)
        if kind == b"hash":
            for field, value in (await client.redis.hgetall(key)).items():
                out += [field, value]
        elif kind == b"zset":
            out += list(await client.redis.zrange(key, 0, -1))
    return out


async def test_create_and_get(client: RedisClient) -> None:
    sessions = SessionStore(client)
    user = uuid4()
    before = datetime.now(UTC)
    session = await sessions.create(user, {"role": "admin", "n": [1, 2]})
    assert session.user_id == user
    assert session.data == {"role": "admin", "n": [1, 2]}
    assert before + timedelta(hours=24) - timedelta(seconds=5) < session.expires_at
    assert session.expires_at <= datetime.now(UTC) + timedelta(hours=24)
    assert len(session.token) >= 43  # 32 random bytes, base64url
    got = await sessions.get(session.token)
    assert got == session
    assert await sessions.get(session.token + "x") is None
    assert await sessions.get("") is None
    assert session.token not in repr(session)


async def test_tokens_are_unique_and_unguessable(client: RedisClient) -> None:
    sessions = SessionStore(client)
    user = uuid4()
    made = await asyncio.gather(*(sessions.create(user) for _ in range(50)))
    assert len({s.token for s in made}) == 50


async def test_ttl_is_read_back_from_redis(client: RedisClient) -> None:
    sessions = SessionStore(client)
    user = uuid4()
    await sessions.create(user)
    keys = [k async for k in client.redis.scan_iter(match=f"{client.namespace}:session:*")]
    assert len(keys) == 2  # the session and the user's set
    for key in keys:
        assert DAY_MS - 5_000 < await client.redis.pttl(key) <= DAY_MS


async def test_no_raw_token_in_any_key_or_value(client: RedisClient) -> None:
    sessions = SessionStore(client)
    made = [await sessions.create(uuid4(), {"k": "v"}) for _ in range(5)]
    await sessions.refresh(made[0].token)
    dump = b"\n".join(await namespace_dump(client))
    assert dump  # the namespace holds the sessions
    for session in made:
        tag, _, secret = session.token.partition(".")
        assert len(tag) == 16
        assert session.token.encode() not in dump
        assert secret[:16].encode() not in dump  # the tag, a hash of the user id, is in keys


@pytest.mark.slow
@pytest.mark.timing
async def test_refresh_slides_the_expiry(client: RedisClient) -> None:
    sessions = SessionStore(client, ttl=timedelta(seconds=2))
    session = await sessions.create(uuid4())
    await asyncio.sleep(1.2)
    refreshed = await sessions.refresh(session.token)
    assert refreshed is not None
    assert refreshed.expires_at > session.expires_at + timedelta(seconds=1)
    keys = [k async for k in client.redis.scan_iter(match=f"{client.namespace}:session:*")]
    for key in keys:
        assert 1_500 < await client.redis.pttl(key) <= 2_000
    await asyncio.sleep(1.2)  # past the first expiry, within the refreshed one
    assert await sessions.get(session.token) == refreshed
    assert await sessions.refresh("nope") is None


@pytest.mark.timing
async def test_session_expires(client: RedisClient) -> None:
    sessions = SessionStore(client, ttl=timedelta(milliseconds=300))
    session = await sessions.create(uuid4())
    assert await sessions.get(session.token) is not None
    await asyncio.sleep(0.45)
    assert await sessions.get(session.token) is None
    assert await sessions.refresh(session.token) is None


async def test_revoke(client: RedisClient) -> None:
    sessions = SessionStore(client)
    user = uuid4()
    one, two = await sessions.create(user), await sessions.create(user)
    assert await sessions.revoke(one.token) is True
    assert await sessions.revoke(one.token) is False
    assert await sessions.get(one.token) is None
    assert await sessions.refresh(one.token) is None
    assert await sessions.get(two.token) == two
    assert await sessions.revoke_all(user) == 1  # only two was left


async def test_revoke_all(client: RedisClient) -> None:
    sessions = SessionStore(client)
    ada, bob = uuid4(), uuid4()
    adas = [await sessions.create(ada) for _ in range(4)]
    bobs = await sessions.create(bob)
    assert await sessions.revoke_all(ada) == 4
    for session in adas:
        assert await sessions.get(session.token) is None
    assert await sessions.get(bobs.token) == bobs
    assert await sessions.revoke_all(ada) == 0
    fresh = await sessions.create(ada)  # signing in again works after
    assert await sessions.get(fresh.token) == fresh


async def test_revoke_all_while_the_user_signs_in_elsewhere(client: RedisClient) -> None:
    # revoke_all lists the user's sessions, then deletes them in a script that names
    # each key; sign-ins racing it must not make it miss a session that existed before.
    sessions = SessionStore(client)
    ada = uuid4()
    before = [await sessions.create(ada) for _ in range(10)]
    racing = [sessions.create(ada) for _ in range(30)]
    revoked, *during = await asyncio.gather(sessions.revoke_all(ada), *racing)
    assert all([await sessions.get(s.token) is None for s in before])
    alive = [s for s in during if await sessions.get(s.token) is not None]
    assert revoked + len(alive) == 10 + len(during)  # each one either revoked or alive
    assert await sessions.revoke_all(ada) == len(alive)


@pytest.mark.timing
async def test_expired_sessions_leave_the_user_set(client: RedisClient) -> None:
    short = SessionStore(client, ttl=timedelta(milliseconds=200))
    user = uuid4()
    for _ in range(3):
        await short.create(user)
    await asyncio.sleep(0.3)
    kept = await SessionStore(client).create(user)
    tag = kept.token.partition(".")[0]
    members = await client.redis.zrange(f"{client.namespace}:session:{{{tag}}}:index", 0, -1)
    assert len(members) == 1


async def test_data_must_be_json(client: RedisClient) -> None:
    with pytest.raises(ValidationError, check=field_is("data")):
        await SessionStore(client).create(uuid4(), {"x": object()})


async def test_redis_down_raises_service_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = RedisClient(Settings(redis_url=f"redis://127.0.0.1:{port}/0", namespace="tdead"))
    await client.open()
    sessions = SessionStore(client)
    try:
        token = f"{'A' * 16}.{secrets.token_urlsafe(32)}"  # well formed: Redis is asked
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: sessions.create(uuid4()),
            lambda: sessions.get(token),
            lambda: sessions.refresh(token),
            lambda: sessions.revoke(token),
            lambda: sessions.revoke_all(uuid4()),
            lambda: sessions.get(token),  # now with the breaker open
        ]
        for call in calls:
            with pytest.raises(ServiceUnavailable) as info:
                await call()
            assert info.value.service == "redis"
    finally:
        await client.aclose()


def test_session_is_frozen() -> None:
    session = Session("t", uuid4(), {}, datetime.now(UTC))
    with pytest.raises(AttributeError):
        session.token = "other"  # type: ignore[misc]
