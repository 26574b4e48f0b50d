"""What the caches take from callers: ids, keys and JSON values are checked before any key
is built or any command is sent, so no caller's value can reach another entry's key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID, uuid4

import pytest
from tests.helpers import field_is

from helpers import make_project
from wis2l_core import ValidationError
from wis2l_core.cache import BuildCache, Cache, RateLimiter, RedisClient, SessionStore, TokenCache


async def all_keys(client: RedisClient) -> list[str]:
    match = f"{client.namespace}:*"
    return sorted([k.decode() async for k in client.redis.scan_iter(match=match, count=500)])


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# -- TokenCache: project ids ---------------------------------------------------------


async def test_token_cache_refuses_a_generation_key_as_project_id(client: RedisClient) -> None:
    cache = TokenCache(client)
    pid = uuid4()
    assert await cache.get_or_load(pid, lambda: _const({"v": 1})) == {"v": 1}
    assert await cache.invalidate(pid)
    calls = 0

    async def loader() -> str:
        nonlocal calls
        calls += 1
        return "mine"

    with pytest.raises(ValidationError) as info:
        await cache.get_or_load(f"gen:{pid}", loader)  # type: ignore[call-overload]
    assert info.value.field == "project_id"
    assert calls == 0
    assert await client.redis.get(client.key("tokens", f"{{{pid}}}:gen")) == b"1"  # untouched


async def test_token_cache_refuses_a_lock_key_as_project_id(client: RedisClient) -> None:
    cache = TokenCache(client)
    pid = uuid4()
    with pytest.raises(ValidationError) as info:
        await cache.get_or_load(f"lock:{pid}", lambda: _const("x"))  # type: ignore[call-overload]
    assert info.value.field == "project_id"
    assert not await client.redis.exists(client.key("tokens", f"{{{pid}}}:lock"))
    # So the real project still loads once and is cached, with no 10 s wait.
    assert await cache.get_or_load(pid, lambda: _const([1, 2])) == [1, 2]
    assert await client.redis.exists(cache.key(pid))


@pytest.mark.parametrize("bad", ["*", "", "gen:x", 42, None, b"\x00" * 16])
async def test_token_cache_every_entry_point_checks_the_id(client: RedisClient, bad: Any) -> None:
    cache = TokenCache(client)
    for call in (
        lambda: cache.get_or_load(bad, lambda: _const(1)),
        lambda: cache.invalidate(bad),
    ):
        with pytest.raises(ValidationError) as info:
            await call()
        assert info.value.field == "project_id"
    with pytest.raises(ValidationError, check=field_is("project_id")):
        cache.key(bad)
    assert await all_keys(client) == []


async def test_token_cache_spellings_of_one_uuid_share_one_entry(client: RedisClient) -> None:
    cache = TokenCache(client)
    pid = uuid4()
    assert await cache.get_or_load(str(pid).upper(), lambda: _const("first")) == "first"  # type: ignore[call-overload]
    assert await cache.get_or_load(pid, lambda: _const("second")) == "first"
    assert cache.key(pid.hex) == cache.key(pid)  # type: ignore[arg-type]


async def _const(value: Any) -> Any:
    return value


# -- SessionStore: user ids and tokens -----------------------------------------------


async def test_session_for_a_non_uuid_user_is_refused(client: RedisClient) -> None:
    sessions = SessionStore(client)
    with pytest.raises(ValidationError) as info:
        await sessions.create("*")  # type: ignore[arg-type]
    assert info.value.field == "user_id"
    with pytest.raises(ValidationError) as info:
        await sessions.revoke_all("*")  # type: ignore[arg-type]
    assert info.value.field == "user_id"
    assert await all_keys(client) == []


async def test_session_user_id_given_as_text_reads_back_as_uuid(client: RedisClient) -> None:
    sessions = SessionStore(client)
    user = uuid4()
    session = await sessions.create(str(user))  # type: ignore[arg-type]
    assert session.user_id == user
    found = await sessions.get(session.token)
    assert found is not None
    assert found.user_id == user
    assert await sessions.revoke_all(user) == 1


@pytest.mark.parametrize(
    "token", ["garbage", "*", "a" * 42, "a" * 44, "a" * 42 + "*", "a" * 42 + "\x00", 7, None]
)
async def test_a_malformed_token_is_not_found_without_asking_redis(
    client: RedisClient, token: Any
) -> None:
    sessions = SessionStore(client)
    await client.aclose()  # any command would now raise ServiceUnavailable
    assert await sessions.get(token) is None
    assert await sessions.refresh(token) is None
    assert await sessions.revoke(token) is False
    await client.open()


async def test_a_corrupt_session_entry_is_not_found(client: RedisClient) -> None:
    sessions = SessionStore(client)
    session = await sessions.create(uuid4())
    digest_key = next(k for k in await all_keys(client) if ":user:" not in k)
    await client.redis.hset(digest_key, "user_id", "*")
    assert await sessions.get(session.token) is None


# -- Free-form keys: Cache, BuildCache, RateLimiter --------------------------------


@pytest.mark.parametrize("service", ["session", "tokens", "ratelimit", "build"])
def test_a_generic_cache_cannot_use_a_built_in_service(client: RedisClient, service: str) -> None:
    with pytest.raises(ValidationError) as info:
        Cache(client, service)
    assert info.value.field == "service"


@pytest.mark.parametrize("service", ["", "a:b", "a b", "a*", "x" * 65, "caf\u00e9"])
def test_service_names_are_plain(client: RedisClient, service: str) -> None:
    with pytest.raises(ValidationError, check=field_is("service")):
        Cache(client, service)


async def test_keys_are_encoded_one_to_one_without_glob_characters(client: RedisClient) -> None:
    cache = Cache(client, "x", ttl=60)
    keys = ["a*", "a?", "[ab]", "a\\b", "a b", "a%2A", "%", "%25", "a\nb", "a\x00b"]
    keys += ["\u00e9", "a:b"]
    for i, key in enumerate(keys):
        assert await cache.set(key, i)
    for i, key in enumerate(keys):
        assert await cache.get(key) == i  # distinct: no two keys share an entry
    stored = await all_keys(client)
    assert len(stored) == len(keys)
    prefix = f"{client.namespace}:x:"
    for full in stored:
        assert full.startswith(prefix)
        rest = full[len(prefix) :]
        assert not set(rest) & set("*?[]\\ \n\x00"), full
    assert cache.key("plain-key:1.2") == prefix + "plain-key:1.2"  # plain keys unchanged


@pytest.mark.parametrize("key", ["", "k" * 1025, 5, None, b"k", "\ud800"])
async def test_bad_free_form_keys_are_refused(client: RedisClient, key: Any) -> None:
    cache = Cache(client, "x", ttl=60)
    builds = BuildCache(client)
    limiter = RateLimiter(client)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: cache.get(key),
        lambda: cache.set(key, 1),
        lambda: cache.delete(key),
        lambda: cache.invalidate(key),
        lambda: cache.exists(key),
        lambda: builds.get(key),
        lambda: builds.set(key, {}),
        lambda: builds.invalidate(key),
        lambda: limiter.hit(key, limit=1, per=1),
    ]
    for call in calls:
        with pytest.raises(ValidationError) as info:
            await call()
        assert info.value.field == "key"
    assert await all_keys(client) == []


async def test_rate_limit_keys_stay_in_their_service(client: RedisClient) -> None:
    limiter = RateLimiter(client)
    sessions = SessionStore(client)
    session = await sessions.create(uuid4())
    before = await all_keys(client)
    assert (await limiter.hit("login:*", limit=1, per=60)).allowed
    assert (await limiter.hit("login:%2A", limit=1, per=60)).allowed  # not the same key
    assert not (await limiter.hit("login:*", limit=1, per=60)).allowed
    new = sorted(set(await all_keys(client)) - set(before))
    assert new == [
        f"{client.namespace}:ratelimit:login:%252A",
        f"{client.namespace}:ratelimit:login:%2A",
    ]
    assert await sessions.get(session.token) is not None


# -- JSON values: depth, NUL, size, type --------------------------------------------


async def test_deeply_nested_json_is_refused_everywhere(client: RedisClient) -> None:
    deep = nested(10_000)
    cache = Cache(client, "x", ttl=60)
    with pytest.raises(ValidationError) as info:
        await cache.set("k", deep)
    assert info.value.field == "value"
    with pytest.raises(ValidationError) as info:
        await BuildCache(client).set("k", {"files": deep})
    assert info.value.field == "artifacts"
    with pytest.raises(ValidationError) as info:
        await SessionStore(client).create(uuid4(), {"x": deep})
    assert info.value.field == "data"
    # past orjson's 255 levels, short of Python's limit
    with pytest.raises(ValidationError, check=field_is("value")):
        await cache.set("k", nested(300))
    assert await all_keys(client) == []
    assert await cache.set("k", nested(200))  # deep but within the limit


@pytest.mark.parametrize(
    "value", [float("nan"), {"x": float("inf")}, "a\x00b", {"a\x00": 1}, 2**64, object()]
)
async def test_values_json_cannot_hold_are_refused(client: RedisClient, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        await Cache(client, "x", ttl=60).set("k", value)
    assert info.value.field == "value"
    with pytest.raises(ValidationError) as info:
        await SessionStore(client).create(uuid4(), {"v": value})
    assert info.value.field == "data"
    assert await all_keys(client) == []


# Text with no NUL although its JSON holds a backslash then "u0000": one backslash before
# "u0000", three, and in a key.
NOT_NUL = ["\\u0000", "a\\\\\\u0000b", {"\\u0000": "\\\\u0000"}]


@pytest.mark.parametrize("value", NOT_NUL)
async def test_backslash_u0000_text_is_no_nul(client: RedisClient, wis: Any, value: Any) -> None:
    cache = Cache(client, "x", ttl=60)
    assert await cache.set("k", value)
    assert await cache.get("k") == value
    session = await SessionStore(client).create(uuid4(), {"v": value})
    assert session.data == {"v": value}
    project_id = await make_project(wis)  # and a JSONB column
    updated = await wis.projects.update(project_id, metadata={"v": value})
    assert updated.metadata == {"v": value}
    found = await wis.projects.find_by_id(project_id)
    assert found is not None
    assert found.metadata == {"v": value}


@pytest.mark.parametrize("value", ["\x00", "\\\x00", {"\\u0000": "\x00"}, ["\\", "\x00u0000"]])
async def test_a_real_nul_next_to_backslashes_is_refused(
    client: RedisClient, wis: Any, value: Any
) -> None:
    with pytest.raises(ValidationError) as info:
        await Cache(client, "x", ttl=60).set("k", value)
    assert info.value.field == "value"
    project_id = await make_project(wis)
    with pytest.raises(ValidationError) as info:
        await wis.projects.update(project_id, metadata={"v": value})
    assert info.value.field == "metadata"
    assert await all_keys(client) == []


async def test_size_limits(client: RedisClient) -> None:
    with pytest.raises(ValidationError) as info:
        await Cache(client, "x").set("k", "x" * (16 * 1024 * 1024))
    assert info.value.field == "value"
    with pytest.raises(ValidationError) as info:
        await SessionStore(client).create(uuid4(), {"blob": "x" * (64 * 1024)})
    assert info.value.field == "data"
    assert await all_keys(client) == []
    assert await SessionStore(client).create(uuid4(), {"blob": "x" * 60_000})


async def test_session_data_must_be_a_mapping(client: RedisClient) -> None:
    with pytest.raises(ValidationError) as info:
        await SessionStore(client).create(uuid4(), [("a", 1)])  # type: ignore[arg-type]
    assert info.value.field == "data"


# -- BuildCache manifests ----------------------------------------------------------


@pytest.mark.parametrize("artifacts", [[{"name": "game.zip", "size": 10}], "game.zip", 3, None])
async def test_a_manifest_that_is_not_an_object_is_refused(
    client: RedisClient, artifacts: Any
) -> None:
    builds = BuildCache(client)
    with pytest.raises(ValidationError) as info:
        await builds.set("k", artifacts)
    assert info.value.field == "artifacts"
    assert not await client.redis.exists(builds.key("k"))


async def test_a_manifest_is_stored_exactly_as_given(client: RedisClient) -> None:
    builds = BuildCache(client)
    manifest = {"files": [{"name": "game.zip", "size": 10}], "id": str(UUID(int=1))}
    assert await builds.set("k", manifest)
    assert await builds.get("k") == manifest
