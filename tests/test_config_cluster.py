"""Settings for identity, clusters and scale: each variable parses, and each bad value is a
one-line ConfigError naming the variable."""

from __future__ import annotations

from datetime import timedelta

import pytest

from wis2l_core import ConfigError, Settings
from wis2l_core.config import FirstSignIn, parse_duration


def test_defaults() -> None:
    s = Settings()
    assert s.stream_replicas == 1
    assert s.outbox_partitions == 16
    assert s.events_retention is None
    assert s.db_prepared_statements is True
    assert s.database_direct_url is None
    assert s.direct_database_url == s.database_url
    assert s.oidc_issuer is None
    assert s.oidc_algorithms == ("RS256", "ES256", "EdDSA", "PS256")
    assert s.oidc_first_sign_in is FirstSignIn.CREATE
    assert s.oidc_role_claim is None


def test_from_env_reads_every_new_variable() -> None:
    s = Settings.from_env(
        {
            "WIS2L_STREAM_REPLICAS": "3",
            "WIS2L_OUTBOX_PARTITIONS": "64",
            "WIS2L_EVENTS_RETENTION": "90d",
            "WIS2L_DB_PREPARED_STATEMENTS": "false",
            "DATABASE_URL": "postgresql://app@pgbouncer:6432/wis2l",
            "DATABASE_DIRECT_URL": "postgresql://app:s3cret@db:5432/wis2l",
            "WIS2L_OIDC_ISSUER": "https://nocturnaid.org",
            "WIS2L_OIDC_AUDIENCE": "wis2l-api",
            "WIS2L_OIDC_ALGORITHMS": "ES256, EdDSA",
            "WIS2L_OIDC_LEEWAY": "5",
            "WIS2L_OIDC_ROLE_CLAIM": "wis2l_role",
            "WIS2L_OIDC_FIRST_SIGN_IN": "REFUSE",
        }
    )
    assert s.stream_replicas == 3
    assert s.outbox_partitions == 64
    assert s.events_retention == timedelta(days=90)
    assert s.db_prepared_statements is False
    assert s.direct_database_url == "postgresql://app:s3cret@db:5432/wis2l"
    assert "s3cret" not in repr(s)
    assert s.oidc_issuer == "https://nocturnaid.org"
    assert s.oidc_audience == "wis2l-api"
    assert s.oidc_algorithms == ("ES256", "EdDSA")
    assert s.oidc_leeway == 5.0
    assert s.oidc_role_claim == "wis2l_role"
    assert s.oidc_first_sign_in is FirstSignIn.REFUSE


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
        ("7D", timedelta(days=7)),
    ],
)
def test_durations(raw: str, expected: timedelta) -> None:
    assert parse_duration(raw) == expected


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("WIS2L_STREAM_REPLICAS", "0"),
        ("WIS2L_STREAM_REPLICAS", "6"),
        ("WIS2L_STREAM_REPLICAS", "three"),
        ("WIS2L_OUTBOX_PARTITIONS", "0"),
        ("WIS2L_OUTBOX_PARTITIONS", "1025"),
        ("WIS2L_EVENTS_RETENTION", "90"),
        ("WIS2L_EVENTS_RETENTION", "0d"),
        ("WIS2L_EVENTS_RETENTION", "-1d"),
        ("WIS2L_EVENTS_RETENTION", "1y"),
        ("WIS2L_EVENTS_RETENTION", "1.5d"),
        ("WIS2L_DB_PREPARED_STATEMENTS", "maybe"),
        ("DATABASE_DIRECT_URL", "mysql://db/x"),
        ("WIS2L_OIDC_ALGORITHMS", "RS256,HS256"),
        ("WIS2L_OIDC_ALGORITHMS", "none"),
        ("WIS2L_OIDC_FIRST_SIGN_IN", "invite"),
        ("WIS2L_OIDC_LEEWAY", "-3"),
        ("REDIS_URL", "redis+sentinel://a:26379"),
        ("REDIS_URL", "redis+sentinel://a:26379,b:x/mymaster"),
        ("REDIS_URL", "redis+cluster://a:7000,b:7001/3"),
        ("REDIS_URL", "redis+cluster://"),
        ("REDIS_URL", "redis+sentinel://a:26379/mymaster/db"),
    ],
)
def test_bad_values_name_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: raw})
    assert caught.value.variable == variable
    assert "\n" not in str(caught.value)


def test_an_issuer_needs_an_audience() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"WIS2L_OIDC_ISSUER": "https://nocturnaid.org"})
    assert caught.value.variable == "WIS2L_OIDC_AUDIENCE"


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://10.0.0.1:7000",
        "redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002",
        "rediss+cluster://10.0.0.1:7000/0",
        "redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster",
        "rediss+sentinel://:pw@s1:26379/mymaster/2",
    ],
)
def test_cluster_and_sentinel_urls(url: str) -> None:
    s = Settings.from_env({"REDIS_URL": url})
    assert s.redis_url == url
    if ":pw@" in url:
        assert "pw" not in repr(s)
