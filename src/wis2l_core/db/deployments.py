"""Deployments (WAYPOINT) and their state machine (``sql/queries/deployments.sql``).

A deployment's status moves only ``pending -> in_progress -> completed | failed``, or
straight ``pending -> failed`` (a deployment refused or cancelled before it began). As
for builds, :meth:`DeploymentRepository.update` enforces this in one locked statement.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from psycopg.rows import DictRow

from wis2l_core._validate import check_enum, check_optional_uuid, check_text, check_uuid
from wis2l_core.catalogue import (
    DeploymentCompleted,
    DeploymentFailed,
    DeploymentStarted,
    DomainEvent,
)
from wis2l_core.db.repository import (
    DeleteById,
    FindAll,
    FindByProject,
    Repository,
    set_field,
)
from wis2l_core.db.rows import row_builder
from wis2l_core.db.states import allowed_from
from wis2l_core.errors import InvalidTransition, NotFound, ValidationError
from wis2l_core.ids import uuid7
from wis2l_core.models import Deployment, DeploymentStatus, Environment
from wis2l_core.sentinel import UNSET, Unset

__all__ = ["DEPLOYMENT_TRANSITIONS", "DeploymentRepository", "check_url"]

S = DeploymentStatus

DEPLOYMENT_TRANSITIONS: Mapping[DeploymentStatus, frozenset[DeploymentStatus]] = {
    S.PENDING: frozenset({S.IN_PROGRESS, S.FAILED}),
    S.IN_PROGRESS: frozenset({S.COMPLETED, S.FAILED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
}
"""status -> the statuses it may move to. ``completed`` and ``failed`` are final."""

_ALLOWED_FROM = allowed_from(DEPLOYMENT_TRANSITIONS)
_ANY = [s.value for s in DeploymentStatus]
MAX_URL = 2048


def check_url(field: str, value: object) -> str:
    """An absolute ``http``/``https`` URL with a host, at most 2048 characters, no spaces."""
    url = check_text(field, value, max_len=MAX_URL)
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise ValidationError(f"{field} must be an http(s) URL with a host: {url!r}", field=field)
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ValidationError(f"{field} must not contain spaces or control characters", field=field)
    return url


_deployment = row_builder(Deployment)


def _event(row: DictRow) -> DomainEvent | None:
    """The status event of an update, or none (refused, or no status change)."""
    if row["id"] is None or row["status"] == row["previous_status"]:
        return None
    common: dict[str, Any] = {
        "project_id": row["project_id"],
        "deployment_id": row["id"],
        "environment": Environment(row["environment"]),
        "version": row["version"],
    }
    if row["status"] == S.IN_PROGRESS:
        return DeploymentStarted(**common)
    if row["status"] == S.COMPLETED:
        return DeploymentCompleted(url=row["url"], **common)
    return DeploymentFailed(**common)


class DeploymentRepository(Repository[Deployment], FindAll, FindByProject, DeleteById):
    """WAYPOINT deployments of a project version (optionally a build) to an environment.

    ``delete(id)`` deletes the deployment record, in any status. No event is recorded;
    the deployment's own events (``DeploymentStarted``, ...) stay in the audit log.
    """

    table = "deployments"
    _row = staticmethod(_deployment)

    async def create(
        self,
        *,
        project_id: UUID | str,
        environment: Environment | str,
        version: str,
        build_id: UUID | str | None = None,
    ) -> Deployment:
        """Record a pending deployment of ``version`` to ``environment``.

        Args:
            build_id: the build being deployed; it must belong to the same project.

        Raises:
            ValidationError: a malformed field.
            NotFound: no such project, or no such build in this project.
        """
        params = {
            "id": uuid7(),
            "project_id": check_uuid("project_id", project_id),
            "build_id": check_optional_uuid("build_id", build_id),
            "environment": check_enum("environment", environment, Environment).value,
            "version": check_text("version", version, max_len=100),
        }
        row = await self._write("create", params)
        if row is None:
            raise NotFound(f"build_id: no build {params['build_id']} in project {project_id}")
        return _deployment(row)

    async def update(
        self,
        id: UUID | str,
        *,
        status: DeploymentStatus | str | Unset = UNSET,
        url: str | Unset | None = UNSET,
    ) -> Deployment:
        """Move a deployment along its state machine and/or set its URL.

        ``status`` moves ``pending -> in_progress -> completed | failed`` or
        ``pending -> failed``; anything else (the current status again included) is an
        ``InvalidTransition``; ``completed`` and ``failed`` are final. ``url`` (http/https,
        or ``None`` to clear it) may be set in any status. A status change records
        ``DeploymentStarted``, ``DeploymentCompleted`` (with the URL) or
        ``DeploymentFailed`` with the write; a URL-only change records no event. A call
        that changes nothing (no fields, or the stored URL) keeps ``updated_at``.

        Args:
            id: the deployment.
            status: the status to move to.
            url: where it is live (http/https), or ``None`` to clear it.

        Returns:
            The deployment as stored after the call.

        Raises:
            NotFound: no deployment has this id.
            InvalidTransition: the move is not allowed from the current status; nothing
                was written.
            ValidationError: a malformed field (refused before any SQL).
        """
        params: dict[str, Any] = {"id": check_uuid("id", id)}
        set_field(params, "status", status, lambda v: check_enum("status", v, DeploymentStatus))
        target: DeploymentStatus | None = params["status"]
        set_field(params, "url", url, lambda v: None if v is None else check_url("url", v))
        if target is not None:
            params["status"] = target.value
        params["allowed_from"] = _ANY if target is None else _ALLOWED_FROM[target]

        row = await self._write_found("update", params, _event, noun="deployment")
        if row["id"] is None:
            current = row["previous_status"]
            requested = target.value if target is not None else current
            raise InvalidTransition(
                f"deployment {params['id']} is {current}: it cannot move to {requested}",
                current=current,
                requested=requested,
            )
        return _deployment(row)
