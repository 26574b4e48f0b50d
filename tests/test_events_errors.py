"""The NATS error boundary and the subject names: I/O-free, so no server is needed."""

from __future__ import annotations

import nats.errors
import pytest

from wis2l_core.errors import ConfigError, NotFound, ServiceUnavailable, ValidationError
from wis2l_core.events._errors import map_nats_errors, translate
from wis2l_core.subjects import checked_subject, dlq_subject, stream_subjects, tail_subject


def test_a_nats_error_becomes_service_unavailable_with_its_cause() -> None:
    cause = nats.errors.NoServersError()
    doing = map_nats_errors("publish to a.b")
    with pytest.raises(ServiceUnavailable, match=r"^nats: publish to a\.b: ") as raised, doing:
        raise cause
    assert raised.value.service == "nats"
    assert raised.value.__cause__ is cause


def test_a_value_error_blames_the_setting_only_when_named() -> None:
    with pytest.raises(ConfigError) as raised, map_nats_errors("stream X", config="WIS2L_STREAM"):
        raise ValueError("bad name")
    assert raised.value.variable == "WIS2L_STREAM"
    with pytest.raises(ValueError, match="bad name"), map_nats_errors("stream X"):
        raise ValueError("bad name")  # not NATS's: a bug, raised as it is
    anything = map_nats_errors("publish", unexpected=True)
    with pytest.raises(ServiceUnavailable, match="ValueError: bad"), anything:
        raise ValueError("bad")


def test_our_errors_pass_through() -> None:
    mine = NotFound("gone")
    with pytest.raises(NotFound) as raised, map_nats_errors("x", unexpected=True):
        raise mine
    assert raised.value is mine
    assert translate(mine) is mine
    assert str(translate(TimeoutError())) == "nats: TimeoutError"


def test_subjects_are_spelled_in_one_place() -> None:
    assert checked_subject("wis2l", "build.progress") == "wis2l.build.progress"
    assert stream_subjects("acme") == "acme.>"
    assert dlq_subject("acme", "acme.build.progress") == "acme.dlq.acme.build.progress"
    assert tail_subject("acme", None) == "acme.*.*"
    assert tail_subject("acme", "build.*") == "acme.build.*"
    assert tail_subject("acme", "acme.build.*") == "acme.build.*"
    with pytest.raises(ValidationError):
        checked_subject("wis2l", "build.>")
