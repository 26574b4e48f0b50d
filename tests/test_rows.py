"""db/rows.py: the row builders make the same records the hand-written functions made."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from wis2l_core.catalogue import UserRoleChanged
from wis2l_core.db.components import _component
from wis2l_core.db.rows import row_builder
from wis2l_core.db.tokens import _token
from wis2l_core.db.users import _role_changed, _user
from wis2l_core.models import Component, DesignToken, Language, Role, TokenCategory, User

NOW = datetime.now(UTC)


def test_enum_fields_become_their_enum_and_the_rest_is_taken_as_is() -> None:
    row = {
        "id": uuid4(),
        "email": "a@b.org",
        "name": "A",
        "subject": "sub",
        "role": "admin",
        "created_at": NOW,
        "updated_at": NOW,
    }
    user = _user(row)
    assert type(user.role) is Role
    assert user.role is Role.ADMIN
    assert user == User(**{**row, "role": Role.ADMIN})


def test_tuple_fields_become_tuples_and_renamed_columns_are_read() -> None:
    common = {"id": uuid4(), "project_id": uuid4(), "name": "n", "version": 1}
    times = {"created_at": NOW, "updated_at": NOW}
    component = _component(
        common
        | times
        | {"language": "lua", "code": "", "prompt": None, "model": None, "metadata": {}}
        | {"experts": ["a", "b"]}
    )
    assert component.experts == ("a", "b")
    assert type(component.language) is Language
    assert isinstance(component, Component)
    token = _token(common | times | {"category": "color", "group_name": "g", "value": 1})
    assert token.group == "g"
    assert type(token.category) is TokenCategory
    assert isinstance(token, DesignToken)


def test_event_helpers_build_events_from_renamed_columns() -> None:
    row = {"id": uuid4(), "subject": "sub", "role": "admin", "old_role": "viewer"}
    event = _role_changed(row)
    assert isinstance(event, UserRoleChanged)
    assert (event.user_id, event.sub) == (row["id"], "sub")
    assert (event.previous_role, event.role) == (Role.VIEWER, Role.ADMIN)
    assert type(event.previous_role) is Role
    assert _role_changed(row | {"old_role": "admin"}) is None


def test_a_missing_column_raises_key_error() -> None:
    build = row_builder(User)
    with pytest.raises(KeyError, match="email"):
        build({"id": uuid4()})
