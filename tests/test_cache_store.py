"""The generic Cache and the BuildCache: round trips, TTLs read back from Redis, typing."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.helpers import field_is

from wis2l_core import DesignToken, Settings, TokenCategory, ValidationError
from wis2l_core.cache import BuildCache, Cache, RedisClient


def token(name: str = "primary") -> DesignToken:
    now = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    return DesignToken(
        id=uuid4(),
        project_id=UUID(int=7),
        name=name,
        category=TokenCategory.COLOR,
        group="brand",
        value={"hex": "#ff00aa", "alpha": 0.5},
        version=3,
        created_at=now,
        updated_at=now,
    )


async def test_get_set_delete_exists(client: RedisClient) -> None:
    cache = Cache(client, "things", ttl=60)
    assert await cache.get("a") is None
    assert not await cache.exists("a")
    assert await cache.set("a", {"x": [1, 2, None], "y": "z"})
    assert await cache.exists("a")
    assert await cache.get("a") == {"x": [1, 2, None], "y": "z"}
    assert await cache.delete("a") is True
    assert await cache.delete("a") is False
    assert await cache.invalidate("a") is True  # confirmed gone, though nothing was there
    assert await cache.get("a") is None


async def test_keys_are_namespaced_by_service(client: RedisClient, settings: Settings) -> None:
    cache = Cache(client, "things")
    await cache.set("a", 1)
    assert cache.key("a") == f"{settings.namespace}:things:a"
    assert await client.redis.get(f"{settings.namespace}:things:a") == b"1"
    with pytest.raises(ValidationError, check=field_is("service")):
        Cache(client, "bad:service")


async def test_ttl_is_read_back_from_redis(client: RedisClient) -> None:
    cache = Cache(client, "things", ttl=timedelta(minutes=5))
    await cache.set("default", 1)
    await cache.set("custom", 1, ttl=2.5)
    await cache.set("forever", 1, ttl=None)
    assert 299_000 < await client.redis.pttl(cache.key("default")) <= 300_000
    assert 2_000 < await client.redis.pttl(cache.key("custom")) <= 2_500
    assert 299_000 < await client.redis.pttl(cache.key("forever")) <= 300_000
    no_ttl = Cache(client, "plain")
    await no_ttl.set("k", 1)
    assert await client.redis.pttl(no_ttl.key("k")) == -1
    with pytest.raises(ValidationError, check=field_is("ttl")):
        await cache.set("k", 1, ttl=0)


async def test_typed_get_builds_models_back(client: RedisClient) -> None:
    cache = Cache(client, "designtokens", ttl=60)
    tokens = [token("a"), token("b")]
    await cache.set("p", tokens)
    assert await cache.get("p", list[DesignToken]) == tokens
    plain = await cache.get("p")
    assert plain[0]["category"] == "color"
    assert plain[0]["created_at"] == "2025-01-02T03:04:05.678000+00:00"


async def test_unreadable_value_is_a_logged_miss(
    client: RedisClient, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(client, "designtokens", ttl=60)
    await client.redis.set(cache.key("bad"), b"{not json")
    await cache.set("wrong-shape", {"a": 1})
    assert await cache.get("bad") is None
    assert await cache.get("wrong-shape", list[DesignToken]) is None
    assert sum("unreadable" in r.getMessage() for r in caplog.records) == 2
    assert client.available


# JSON values refuse NUL, as the database, and lone surrogates (not valid Unicode)
NO_NUL = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(NO_NUL),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(NO_NUL, max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


@given(value=json_values.filter(lambda v: v is not None), key=st.text(min_size=1, max_size=30))
async def test_any_json_value_round_trips(client: RedisClient, value: Any, key: str) -> None:
    cache = Cache(client, "json", ttl=60)
    assert await cache.set(key, value)
    assert await cache.get(key) == value


async def test_build_cache(client: RedisClient, settings: Settings) -> None:
    builds = BuildCache(client)
    manifest = {"files": [{"path": "game.pck", "sha256": "ab" * 32, "size": 1234}], "ok": True}
    assert await builds.get("k1") is None
    assert await builds.set("k1", manifest)
    assert await builds.get("k1") == manifest
    assert builds.key("k1") == f"{settings.namespace}:build:k1"
    seven_days = 7 * 24 * 3600 * 1000
    assert seven_days - 5_000 < await client.redis.pttl(builds.key("k1")) <= seven_days
    assert await builds.invalidate("k1") is True
    assert await builds.get("k1") is None


async def test_build_cache_ignores_a_non_object(client: RedisClient) -> None:
    builds = BuildCache(client)
    await client.redis.set(builds.key("k"), b"[1, 2]")
    assert await builds.get("k") is None


async def test_unserializable_value_raises_before_io(
    client: RedisClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wis2l_core.cache")
    cache = Cache(client, "x", ttl=60)
    with pytest.raises(ValidationError) as info:
        await cache.set("k", object())
    assert info.value.field == "value"
    assert not await cache.exists("k")
