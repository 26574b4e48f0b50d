"""Settings.from_env: every variable, defaults, redaction and clear errors."""

from __future__ import annotations

import logging

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wis2l_core import AppEnvironment, ConfigError, Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.database_url == "postgresql://localhost:5432/wis2l"
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.nats_urls == ("nats://localhost:4222",)
    assert s.environment is AppEnvironment.DEVELOPMENT
    assert not s.is_production
    assert s.critical_services == {"database"}


def test_urls_win_over_parts() -> None:
    s = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u@db:6543/x",
            "DATABASE_HOST": "ignored",
            "REDIS_URL": "rediss://cache:6380/2",
            "NATS_URL": "nats://a:4222, b:4223 ,tls://c:4224",
            "WIS2L_ENV": "Production",
        }
    )
    assert s.database_url == "postgresql://u@db:6543/x"
    assert s.redis_url == "rediss://cache:6380/2"
    assert s.nats_urls == ("nats://a:4222", "nats://b:4223", "tls://c:4224")
    assert s.environment is AppEnvironment.PRODUCTION


def test_parts_build_urls_with_quoting() -> None:
    s = Settings.from_env(
        {
            "DATABASE_USER": "ada",
            "DATABASE_PASSWORD": "p@ss:w/rd",
            "DATABASE_HOST": "db.internal",
            "DATABASE_PORT": "6432",
            "DATABASE_NAME": "games",
            "REDIS_HOST": "::1",
            "REDIS_PORT": "6390",
            "REDIS_PASSWORD": "r3d!s",
            "REDIS_DB": "3",
            "NATS_HOST": "nats.internal",
            "NATS_PORT": "4333",
        }
    )
    assert s.database_url == "postgresql://ada:p%40ss%3Aw%2Frd@db.internal:6432/games"
    assert s.redis_url == "redis://:r3d%21s@[::1]:6390/3"
    assert s.nats_urls == ("nats://nats.internal:4333",)


def test_tunables() -> None:
    s = Settings.from_env(
        {
            "WIS2L_DB_POOL_MIN_SIZE": "2",
            "WIS2L_DB_POOL_MAX_SIZE": "20",
            "WIS2L_DB_POOL_TIMEOUT": "3.5",
            "WIS2L_HEALTH_TIMEOUT": "0.5",
            "WIS2L_NAMESPACE": "game-a",
            "WIS2L_STREAM": "GAMEA",
            "WIS2L_CRITICAL_SERVICES": "database, redis",
        }
    )
    assert (s.db_pool_min_size, s.db_pool_max_size, s.db_pool_timeout) == (2, 20, 3.5)
    assert s.health_timeout == 0.5
    assert (s.namespace, s.stream_name) == ("game-a", "GAMEA")
    assert s.critical_services == {"database", "redis"}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://h:99999/x"}, "DATABASE_URL"),
        ({"DATABASE_PORT": "five"}, "DATABASE_PORT"),
        ({"DATABASE_PASSWORD": "x"}, "DATABASE_USER"),
        ({"REDIS_PORT": "0"}, "REDIS_PORT"),
        ({"REDIS_DB": "-1"}, "REDIS_DB"),
        ({"REDIS_URL": "redis://h:6379/zero"}, "REDIS_URL"),
        ({"REDIS_URL": "memcached://h"}, "REDIS_URL"),
        ({"NATS_URL": "http://h:4222"}, "NATS_URL"),
        ({"NATS_URL": " , "}, "NATS_URL"),
        ({"NATS_PORT": "4222x"}, "NATS_PORT"),
        ({"WIS2L_ENV": "staging"}, "WIS2L_ENV"),
        ({"WIS2L_DB_POOL_MAX_SIZE": "0"}, "WIS2L_DB_POOL_MAX_SIZE"),
        ({"WIS2L_DB_POOL_MIN_SIZE": "11"}, "WIS2L_DB_POOL_MIN_SIZE"),
        ({"WIS2L_HEALTH_TIMEOUT": "-1"}, "WIS2L_HEALTH_TIMEOUT"),
        ({"WIS2L_HEALTH_TIMEOUT": "nan"}, "WIS2L_HEALTH_TIMEOUT"),
        ({"WIS2L_CRITICAL_SERVICES": "database,kafka"}, "WIS2L_CRITICAL_SERVICES"),
        ({"WIS2L_NAMESPACE": "a.b"}, "WIS2L_NAMESPACE"),
    ],
)
def test_malformed_value_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.variable == variable
    assert variable in str(info.value)
    assert "\n" not in str(info.value)


def test_password_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    secret = "hunter2-s3cret"
    s = Settings.from_env(
        {
            "DATABASE_URL": f"postgresql://ada:{secret}@db/x",
            "REDIS_URL": f"redis://:{secret}@cache:6379/0",
            "NATS_URL": f"nats://u:{secret}@n1:4222,nats://n2:4222",
        }
    )
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("wis2l_core.test").info("settings: %s %r", s, s)
    for text in (repr(s), str(s), caplog.text):
        assert secret not in text
        assert "***" in text
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"DATABASE_URL": f"mysql://ada:{secret}@db/x"})
    assert secret not in str(info.value)


def test_frozen_and_evolvable() -> None:
    s = Settings.from_env({})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        s.namespace = "x"  # type: ignore[misc]
    assert attrs.evolve(s, namespace="other").namespace == "other"
    with pytest.raises(ConfigError):
        attrs.evolve(s, db_pool_min_size=0)


@given(st.text())
def test_any_port_text_is_a_port_or_a_config_error(raw: str) -> None:
    stripped = raw.strip()
    valid = stripped == "" or (
        stripped.isascii() and stripped.isdigit() and 0 < int(stripped) < 65536
    )
    if not valid:
        with pytest.raises(ConfigError) as info:
            Settings.from_env({"REDIS_PORT": raw})
        assert info.value.variable == "REDIS_PORT"
        return
    port = int(stripped) if stripped else 6379
    assert Settings.from_env({"REDIS_PORT": raw}).redis_url.endswith(f":{port}/0")
