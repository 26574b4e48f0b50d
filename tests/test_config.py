"""Settings.from_env: every variable, defaults, redaction and clear errors."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from urllib.parse import quote, unquote, urlsplit

import attrs
import psycopg.conninfo
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import parse_url as redis_parse_url
from tests.helpers import has

from wis2l_core import AppEnvironment, ConfigError, Settings
from wis2l_core._secrets import secrets_in
from wis2l_core._urls import nats_credentials
from wis2l_core.cache._connect import _credentials, mode_of
from wis2l_core.config import NAME_PATTERN, redact_url
from wis2l_core.health import describe_error, secrets_of


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
        ({"WIS2L_NAMESPACE": "a\tb"}, "WIS2L_NAMESPACE"),
        ({"WIS2L_NAMESPACE": "a\nb"}, "WIS2L_NAMESPACE"),
        ({"WIS2L_NAMESPACE": "a:b"}, "WIS2L_NAMESPACE"),
        ({"WIS2L_NAMESPACE": "n" * 65}, "WIS2L_NAMESPACE"),
        ({"WIS2L_STREAM": "A.B"}, "WIS2L_STREAM"),
        ({"WIS2L_STREAM": "A B"}, "WIS2L_STREAM"),
        ({"WIS2L_STREAM": "A*"}, "WIS2L_STREAM"),
        ({"WIS2L_STREAM": "A>"}, "WIS2L_STREAM"),
        ({"WIS2L_STREAM": "a/b"}, "WIS2L_STREAM"),
        ({"WIS2L_STREAM": "a\\b"}, "WIS2L_STREAM"),
        ({"WIS2L_STREAM": "S" * 65}, "WIS2L_STREAM"),
        ({"DATABASE_HOST": "db host"}, "DATABASE_HOST"),
        ({"DATABASE_HOST": "db/x"}, "DATABASE_HOST"),
        ({"REDIS_HOST": "cache@x"}, "REDIS_HOST"),
        ({"REDIS_HOST": "cache\tx"}, "REDIS_HOST"),
        ({"NATS_HOST": "n1?x"}, "NATS_HOST"),
        ({"NATS_HOST": "::1 x"}, "NATS_HOST"),
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


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("namespace", "a\tb"),
        ("namespace", ""),
        ("namespace", "a.b"),
        ("namespace", 5),
        ("stream_name", "A.B"),
        ("stream_name", ""),
        ("stream_name", "x" * 65),
    ],
)
def test_settings_built_directly_check_names(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        Settings(**{field: value})  # type: ignore[arg-type]
    assert info.value.variable == field
    with pytest.raises(ConfigError):
        attrs.evolve(Settings(), **{field: value})  # type: ignore[arg-type]


@given(st.from_regex(NAME_PATTERN, fullmatch=True))
def test_every_name_in_the_charset_is_accepted(name: str) -> None:
    s = Settings.from_env({"WIS2L_NAMESPACE": name, "WIS2L_STREAM": name})
    assert (s.namespace, s.stream_name) == (name, name)


def test_libpq_multi_host_urls_are_accepted_and_checked() -> None:
    url = "postgresql://ada:Mh-s3cret@h1:5432,h2:5433/db?target_session_attrs=read-write"
    assert Settings.from_env({"DATABASE_URL": url}).database_url == url
    assert "Mh-s3cret" not in repr(Settings(database_url=url))
    for bad in ("postgresql://h1:5432,h2:99999/db", "postgresql://h1,h2:x/db"):
        with pytest.raises(ConfigError) as info:
            Settings.from_env({"DATABASE_URL": bad})
        assert info.value.variable == "DATABASE_URL"


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({"DATABASE_HOST": "::1"}, "postgresql://[::1]:5432/wis2l"),
        ({"DATABASE_HOST": "[::1]"}, "postgresql://[::1]:5432/wis2l"),
        ({"DATABASE_HOST": "db-1.internal"}, "postgresql://db-1.internal:5432/wis2l"),
    ],
)
def test_good_hosts_are_kept(env: dict[str, str], url: str) -> None:
    assert Settings.from_env(env).database_url == url


def test_frozen_and_evolvable() -> None:
    s = Settings.from_env({})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        s.namespace = "x"  # type: ignore[misc]
    assert attrs.evolve(s, namespace="other").namespace == "other"
    with pytest.raises(ConfigError, check=has(variable="db_pool_min_size")):
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


# -- secrets: every form the drivers take a password or token in ---------------------------

SETTINGS_FORMS = [
    ("DATABASE_URL", "postgresql://ada:{q}@db:5432/wis2l"),
    ("DATABASE_URL", "postgresql://ada@db:5432/wis2l?password={q}"),
    ("DATABASE_URL", "postgresql://ada@db/wis2l?sslmode=require&sslpassword={q}"),
    ("DATABASE_URL", "postgresql://ada@db/wis2l?pass%77ord={q}"),
    ("REDIS_URL", "redis://:{q}@cache:6379/0"),
    ("REDIS_URL", "redis://default:{q}@cache:6379/0"),
    ("REDIS_URL", "rediss://cache:6380/0?password={q}"),
    ("NATS_URL", "nats://{q}@n1:4222"),
    ("NATS_URL", "nats://n0:4222,tls://{q}@n1:4222"),
    ("NATS_URL", "nats://ada:{q}@n1:4222"),
]
"""(variable, URL with ``{q}`` where the percent-encoded secret goes)."""

secret_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    min_size=3,
    max_size=24,
)
"""Secrets a server can compare (a NUL is refused: see the tests of it below)."""


def _libpq_quoted(secret: str) -> str:
    return "'" + secret.replace("\\", "\\\\").replace("'", "\\'") + "'"


@given(secret=secret_text, form=st.sampled_from(SETTINGS_FORMS))
def test_no_form_of_secret_shows(secret: str, form: tuple[str, str]) -> None:
    variable, template = form
    q = quote(secret, safe="")
    skeleton = template.format(q="***")
    background = skeleton + repr(Settings.from_env({variable: skeleton}))
    assume(secret not in background and q not in background)  # e.g. "db_" of db_pool_...
    url = template.format(q=q)
    s = Settings.from_env({variable: url})
    error = RuntimeError(f"cannot connect to {url}: authentication failed for {secret!r}")
    outputs = {
        "repr": repr(s),
        "str": str(s),
        "redact_url": redact_url(url),
        "describe_error": describe_error(error, secrets_of(s)),
    }
    for name, text in outputs.items():
        assert secret not in text, name
        assert q not in text, name
    assert "***" in redact_url(url)


@given(secret=secret_text)
def test_a_conninfo_password_never_shows(secret: str) -> None:
    template = "host=db user=ada password={} dbname=wis2l sslmode=require"
    assume(secret not in template.format("***"))
    unquoted = re.sub(r"([ \t\n\v\f\r\\'])", r"\\\1", secret)
    for written in (_libpq_quoted(secret), unquoted):
        conninfo = template.format(written)
        text = redact_url(conninfo)
        assert secret not in text
        assert text.startswith("host=db user=ada password=*** dbname=wis2l")
        assert secret in secrets_in([conninfo])


@given(password=secret_text)
def test_password_parts_never_show(password: str) -> None:
    background = repr(Settings.from_env({"DATABASE_USER": "ada"})) + "***"
    assume(password.strip() == password and password not in background)
    env = {"DATABASE_USER": "ada", "DATABASE_PASSWORD": password, "REDIS_PASSWORD": password}
    s = Settings.from_env(env)
    for text in (repr(s), str(s)):
        assert password not in text
        assert quote(password, safe="") not in text


@pytest.mark.parametrize("variable", ["DATABASE_PASSWORD", "REDIS_PASSWORD"])
def test_a_password_part_holding_a_nul_is_refused_unseen(variable: str) -> None:
    env = {"DATABASE_USER": "ada", variable: "s3cr\x00t"}
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert str(refused.value) == f"{variable} holds a NUL character"
    assert refused.value.variable == variable


@pytest.mark.parametrize("encoded", ["%00", "%90", "ab%C3", "%FF%FE"])
@pytest.mark.parametrize(
    ("variable", "template"),
    [
        ("DATABASE_URL", "postgresql://ada:{p}@db:5432/wis2l"),
        ("REDIS_URL", "redis://default:{p}@cache:6379/0"),
        ("NATS_URL", "nats://ada:{p}@n1:4222"),
    ],
)
def test_a_password_that_decodes_to_a_nul_or_not_utf8_is_refused(
    variable: str, template: str, encoded: str
) -> None:
    url = template.format(p="pw" + encoded)
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({variable: url})
    assert refused.value.variable == variable
    assert "percent-decodes to a NUL or to bytes that are not UTF-8" in str(refused.value)
    assert encoded not in str(refused.value)


def test_redact_url_keeps_what_is_not_secret() -> None:
    assert redact_url("postgresql://ada@db:5432/wis2l?sslmode=require") == (
        "postgresql://ada@db:5432/wis2l?sslmode=require"
    )
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"
    assert redact_url("nats://n1:4222,nats://t0k3n@n2:4222") == (
        "nats://n1:4222,nats://***@n2:4222"
    )
    assert redact_url("postgresql://u:p%40ss@h1:5432,h2:5433/db") == (
        "postgresql://u:***@h1:5432,h2:5433/db"
    )
    assert redact_url("unix://:pw@/run/redis.sock?db=0") == "unix://:***@/run/redis.sock?db=0"


# -- passwords written without percent-encoding ------------------------------------------


def _libpq_password(url: str) -> str | None:
    value = psycopg.conninfo.conninfo_to_dict(url).get("password")
    return None if value is None else str(value)


def _redis_password(url: str) -> str | None:
    if mode_of(url) == "standalone":
        value = redis_parse_url(url).get("password")
        return None if value is None else str(value)
    return _credentials(urlsplit(url).netloc).get("password")


RAW_FORMS: list[tuple[str, str, Callable[[Settings], str | None]]] = [
    (
        "DATABASE_URL",
        "postgresql://ada:{p}@db:5432/wis2l",
        lambda s: _libpq_password(s.database_url),
    ),
    (
        "DATABASE_URL",
        "postgresql://ada:{p}@db1:5432,db2:5433/wis2l?target_session_attrs=read-write",
        lambda s: _libpq_password(s.database_url),
    ),
    (
        "DATABASE_DIRECT_URL",
        "postgresql://ada:{p}@db:5432/wis2l",
        lambda s: _libpq_password(s.direct_database_url),
    ),
    ("REDIS_URL", "redis://default:{p}@cache:6379/0", lambda s: _redis_password(s.redis_url)),
    ("REDIS_URL", "redis+cluster://:{p}@c1:7000,c2:7001", lambda s: _redis_password(s.redis_url)),
    (
        "REDIS_URL",
        "redis+sentinel://:{p}@s1:26379,s2:26380/mymaster/1",
        lambda s: _redis_password(s.redis_url),
    ),
    ("NATS_URL", "nats://ada:{p}@n1:4222", lambda s: nats_credentials(s.nats_urls)[1]["password"]),
    (
        "NATS_URL",
        "nats://n0:4222,nats://ada:{p}@n1:4222",
        lambda s: nats_credentials(s.nats_urls)[1]["password"],
    ),
    ("NATS_URL", "nats://{p}@n1:4222", lambda s: nats_credentials(s.nats_urls)[1]["token"]),
]
"""(variable, URL with ``{p}`` where the password goes as written, how the driver reads it)."""

RESERVED = ":/?#[]@!$&'()*+,;=% \"<>\\^`{|}~-._"
raw_password = st.text(
    alphabet=st.sampled_from(RESERVED) | st.sampled_from("abcXYZ019") | st.just("é"),
    min_size=4,
    max_size=16,
)


@settings(max_examples=400)
@given(password=raw_password, form=st.sampled_from(RAW_FORMS))
def test_a_password_with_reserved_characters_loads_right_or_is_refused_unseen(
    password: str, form: tuple[str, str, Callable[[Settings], str | None]]
) -> None:
    variable, template, read = form
    if template.startswith("nats://{p}"):
        assume(":" not in password)  # "user:password", not a token
    decoded = unquote(password)
    background = template + repr(Settings.from_env({variable: template.format(p="x")})) + "***"
    assume(password not in background and decoded not in background)
    url = template.format(p=password)
    error: ConfigError | None = None
    try:
        s = Settings.from_env({variable: url})
    except ConfigError as exc:
        error = exc
    if error is not None:
        assert error.variable == variable
        assert "percent-encode" in str(error)
        texts = [str(error), repr(error)]
    else:
        assert read(s) == decoded, "loaded, but the driver would read another password"
        texts = [repr(s), str(s)]
    texts.append(redact_url(url))
    for text in texts:
        assert password not in text
        assert decoded not in text


@given(password=raw_password, form=st.sampled_from(RAW_FORMS))
def test_a_percent_encoded_password_always_loads_right(
    password: str, form: tuple[str, str, Callable[[Settings], str | None]]
) -> None:
    variable, template, read = form
    s = Settings.from_env({variable: template.format(p=quote(password, safe=""))})
    assert read(s) == password


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("DATABASE_URL", "postgresql://ada:hunter/2#sekrit@127.0.0.1:1/x"),
        ("REDIS_URL", "redis://:hunter?2@sekrit@127.0.0.1:1/0"),
        ("NATS_URL", "nats://127.0.0.1:1,nats://ada:hunter,2sekrit@127.0.0.1:2"),
    ],
)
def test_the_cli_names_the_variable_and_never_the_password(variable: str, url: str) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "NATS_"))
    }
    result = subprocess.run(
        [sys.executable, "-m", "wis2l_core.cli", "health"],
        env=env | {variable: url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert variable in result.stderr
    assert "percent-encode" in result.stderr
    for part in ("hunter", "sekrit"):
        assert part not in result.stderr + result.stdout
