"""SPARK components: AI-generated code of a project (``sql/queries/components.sql``).

Every write records its event in the same transaction: ``ComponentCreated`` (known before
the write, so the insert and the event go to the server in one pipelined round trip),
``ComponentUpdated`` with the new ``version``, and ``ComponentDeleted``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from wis2l_core._validate import (
    check_enum,
    check_json_object,
    check_optional_text,
    check_text,
    check_text_list,
    check_uuid,
)
from wis2l_core.catalogue import ComponentCreated, ComponentDeleted, ComponentUpdated
from wis2l_core.db.repository import (
    DeleteById,
    FindAll,
    FindByProject,
    Repository,
    set_field,
)
from wis2l_core.db.rows import row_builder
from wis2l_core.errors import NotFound
from wis2l_core.ids import uuid7
from wis2l_core.models import Component, Language
from wis2l_core.sentinel import UNSET, Unset

__all__ = ["ComponentRepository"]

MAX_NAME = 200
MAX_CODE = 1_000_000
MAX_PROMPT = 100_000
MAX_MODEL = 200
MAX_EXPERTS = 64
MAX_EXPERT = 200


_component = row_builder(Component)


_updated_event = row_builder(ComponentUpdated, columns={"component_id": "id"})
_deleted = row_builder(ComponentDeleted, columns={"component_id": "id"})


def _updated(row: DictRow) -> ComponentUpdated | None:
    # not "changed": every value was the stored one, nothing written
    return _updated_event(row) if row["changed"] else None


def _name(value: object) -> str:
    return check_text("name", value, max_len=MAX_NAME)


def _code(value: object) -> str:
    # Empty code is allowed: a component may be stored before its code is generated.
    return check_text("code", value, max_len=MAX_CODE, min_len=0)


def _prompt(value: object) -> str | None:
    return check_optional_text("prompt", value, max_len=MAX_PROMPT)


def _model(value: object) -> str | None:
    return check_optional_text("model", value, max_len=MAX_MODEL)


def _experts(value: object) -> list[str]:
    return check_text_list("experts", value, max_len=MAX_EXPERT, max_items=MAX_EXPERTS)


def _metadata(value: object) -> Jsonb:
    return Jsonb(check_json_object("metadata", {} if value is None else value))


class ComponentRepository(Repository[Component], FindAll, FindByProject, DeleteById):
    """Generated components, listed overall or per project; versioned on each update.

    ``delete(id)`` records ``ComponentDeleted`` with the deletion (no event when there
    was no such component).
    """

    table = "components"
    _row = staticmethod(_component)
    _delete_event = staticmethod(_deleted)

    async def create(
        self,
        *,
        project_id: UUID | str,
        name: str,
        language: Language | str,
        code: str,
        prompt: str | None = None,
        model: str | None = None,
        experts: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> Component:
        """Store a generated component (version 1) and record ``ComponentCreated``.

        Args:
            project_id: the project it belongs to.
            name: 1..200 characters.
            language: the language of ``code``.
            code: the source, at most 1,000,000 characters (may be empty).
            prompt: the prompt it was generated from (at most 100,000 characters).
            model: the model that generated it (at most 200 characters).
            experts: names of the experts consulted (at most 64, each 1..200 characters).
            metadata: generation details as a JSON object (``{}`` when omitted).

        Raises:
            ValidationError: a field is malformed (``field`` names it).
            NotFound: no project has ``project_id``.
        """
        id_, pid, checked_name = uuid7(), check_uuid("project_id", project_id), _name(name)
        lang = check_enum("language", language, Language)
        params = {
            "id": id_,
            "project_id": pid,
            "name": checked_name,
            "language": lang.value,
            "code": _code(code),
            "prompt": _prompt(prompt),
            "model": _model(model),
            "experts": _experts(experts),
            "metadata": _metadata(metadata),
        }
        event = ComponentCreated(
            project_id=pid, component_id=id_, name=checked_name, language=lang, version=1
        )
        return await self._write_model("create", params, event)

    async def update(
        self,
        id: UUID | str,
        *,
        name: str | Unset = UNSET,
        language: Language | str | Unset = UNSET,
        code: str | Unset = UNSET,
        prompt: str | Unset | None = UNSET,
        model: str | Unset | None = UNSET,
        experts: Sequence[str] | Unset = UNSET,
        metadata: Mapping[str, Any] | Unset | None = UNSET,
    ) -> Component:
        """Change the given fields, add one to ``version`` and record ``ComponentUpdated``.

        The version is bumped by the database (``version + 1``), so concurrent updates get
        distinct versions. A call that changes nothing (no fields, or every value equal to
        the stored one) returns the component as it is: no new version, the same
        ``updated_at``, no event.

        Args:
            id: the component.
            name: 1..200 characters.
            language: the language of ``code``.
            code: the source, at most 1,000,000 characters (may be empty).
            prompt: the prompt, at most 100,000 characters; ``None`` clears it.
            model: the model, at most 200 characters; ``None`` clears it.
            experts: names of the experts consulted (replaces the list).
            metadata: a JSON object (replaces the stored one; ``None`` means ``{}``).

        Returns:
            The component as stored after the call.

        Raises:
            NotFound: no component has this id.
            ValidationError: a field is malformed.
        """
        params: dict[str, Any] = {"id": check_uuid("id", id)}
        set_field(params, "name", name, _name)
        set_field(params, "language", language, lambda v: check_enum("language", v, Language))
        set_field(params, "code", code, _code)
        set_field(params, "prompt", prompt, _prompt)
        set_field(params, "model", model, _model)
        set_field(params, "experts", experts, _experts)
        set_field(params, "metadata", metadata, _metadata)
        if params["set_language"]:
            params["language"] = params["language"].value
        if not any(v for k, v in params.items() if k.startswith("set_")):
            found = await self.find_by_id(params["id"])
            if found is None:
                raise NotFound(f"no component with id {params['id']}")
            return found
        row = await self._write_found("update", params, _updated, noun="component")
        return _component(row)
