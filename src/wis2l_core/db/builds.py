"""Builds (IGNIS) and their state machine (``sql/queries/builds.sql``).

A build's status moves only ``pending -> building -> completed | failed``, or straight
``pending -> failed``. :meth:`BuildRepository.update` enforces that inside its one SQL
statement (the row is locked and its status checked by the database), so two workers
racing to finish one build cannot both win: the loser gets ``InvalidTransition``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from wis2l_core._validate import (
    check_enum,
    check_int,
    check_json_object,
    check_optional_text,
    check_text,
    check_uuid,
)
from wis2l_core.catalogue import (
    BuildCompleted,
    BuildFailed,
    BuildProgress,
    BuildStarted,
    DomainEvent,
)
from wis2l_core.db.repository import DeleteById, FindAll, FindByProject, Repository, set_field
from wis2l_core.db.rows import row_builder
from wis2l_core.db.states import allowed_from
from wis2l_core.errors import InvalidTransition, ValidationError
from wis2l_core.ids import uuid7
from wis2l_core.models import Build, BuildStatus, Page
from wis2l_core.sentinel import UNSET, Unset

__all__ = ["BUILD_TRANSITIONS", "MAX_LOG", "MAX_LOGS", "BuildRepository"]

S = BuildStatus

BUILD_TRANSITIONS: Mapping[BuildStatus, frozenset[BuildStatus]] = {
    S.PENDING: frozenset({S.BUILDING, S.FAILED}),
    S.BUILDING: frozenset({S.COMPLETED, S.FAILED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
}
"""status -> the statuses it may move to. ``completed`` and ``failed`` are final."""

_ALLOWED_FROM = allowed_from(BUILD_TRANSITIONS)
_ANY = [s.value for s in BuildStatus]
# The statuses from which an update may change the progress (to a value other than the
# stored one), per status asked for (None: no status).
_PROGRESS_FROM: Mapping[BuildStatus | None, list[str]] = {
    None: [S.BUILDING.value],
    S.BUILDING: _ANY,  # only ever from pending: the start of the build
    S.COMPLETED: _ANY,  # the progress is 100, from building only
    S.FAILED: [S.BUILDING.value],  # a build that never started has no progress to keep
    S.PENDING: [],
}
MAX_LOG = 1_000_000
"""The most characters one :meth:`BuildRepository.update` call appends to ``logs``."""
MAX_LOGS = 1_000_000
"""The most characters a build keeps in ``logs``: older text is dropped from the front."""


_build = row_builder(Build)


def _event(row: DictRow) -> DomainEvent | None:
    """The one event of an update: its status event, else ``BuildProgress``, else none."""
    if row["id"] is None:  # refused: nothing was written
        return None
    common: dict[str, Any] = {"project_id": row["project_id"], "build_id": row["id"]}
    status = row["status"]
    if status != row["previous_status"]:
        if status == S.BUILDING:
            return BuildStarted(target=row["target"], **common)
        if status == S.COMPLETED:
            return BuildCompleted(target=row["target"], artifacts=row["artifacts"], **common)
        return BuildFailed(target=row["target"], **common)
    if row["progress"] != row["previous_progress"]:
        return BuildProgress(progress=row["progress"], **common)
    return None


class BuildRepository(Repository[Build], FindAll, FindByProject, DeleteById):
    """IGNIS builds of a project, one per target, with progress, artifacts and logs.

    ``delete(id)`` deletes the build, in any status. Deployments of the build stay (they
    are the record of what was deployed where): their ``build_id`` becomes ``None``. No
    event is recorded; the build's own events (``BuildStarted``, ...) stay in the audit
    log. A worker still updating a deleted build gets ``NotFound``.
    """

    table = "builds"
    _row = staticmethod(_build)

    async def find_all(
        self,
        *,
        status: BuildStatus | str | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> Page[Build]:
        """Every build, oldest first, optionally only those with ``status``.

        Raises:
            ValidationError: a bad status, limit or cursor.
        """
        return await self._find_all_by(
            "find_all_by_status", "status", status, BuildStatus, limit=limit, after=after
        )

    async def create(self, *, project_id: UUID | str, target: str) -> Build:
        """Queue a build of the project for ``target`` (e.g. ``"webgl"``): pending, progress 0.

        Raises:
            ValidationError: a malformed field.
            NotFound: no project has this id.
        """
        params = {
            "id": uuid7(),
            "project_id": check_uuid("project_id", project_id),
            "target": check_text("target", target, max_len=100),
        }
        return await self._write_model("create", params)

    async def update(
        self,
        id: UUID | str,
        *,
        status: BuildStatus | str | Unset = UNSET,
        progress: int | Unset = UNSET,
        artifacts: Mapping[str, Any] | Unset = UNSET,
        log: str | None = None,
    ) -> Build:
        """Move a build along its state machine and/or record progress, artifacts, logs.

        Rules (checked atomically by the database, in one statement):

        - ``status`` moves ``pending -> building -> completed | failed`` or
          ``pending -> failed``; anything else, the status the build already has
          included, is an ``InvalidTransition``. So of two workers that move one build
          to ``building``, exactly one succeeds: the claim is exclusive.
        - ``progress`` (0..100) may change only while the build is (or is being moved to)
          ``building``; ``building -> failed`` may carry the progress reached;
          ``completed`` sets 100 (another value with it is a ``ValidationError``, as is a
          progress with ``status="pending"``). A build that never started fails at its
          progress 0: ``pending -> failed`` with another progress is a
          ``ValidationError``. A progress change on a pending or finished build, without
          a status that allows it, is an ``InvalidTransition``. A progress equal to the
          stored one is no change, so it is accepted in any status.
        - ``artifacts`` replaces the manifest; ``log`` is appended verbatim to ``logs``
          (bring your own newlines). Both are accepted in any status. A build keeps the
          last :data:`MAX_LOGS` (1,000,000) characters of its log: when an append goes
          past that, the oldest text is dropped, from a line start.
        - ``started_at`` is set on entering ``building``, ``finished_at`` on ``completed``
          or ``failed``, to the time of the statement (never before ``created_at``, nor
          ``finished_at`` before ``started_at``).
        - A call that changes nothing (no keywords, or values equal to the stored ones)
          writes nothing visible: ``updated_at`` stays, and no event is recorded.

        One event is recorded with the write: ``BuildStarted``, ``BuildCompleted`` (with the
        artifacts) or ``BuildFailed`` for a status change; ``BuildProgress`` when only the
        progress changed; none otherwise.

        Args:
            id: the build.
            status: the status to move to.
            progress: the percentage done, 0..100.
            artifacts: the artifact manifest, a JSON object (replaces the stored one).
            log: text to append to ``logs``, at most :data:`MAX_LOG` (1,000,000)
                characters.

        Returns:
            The build as stored after the call.

        Raises:
            NotFound: no build has this id.
            InvalidTransition: the move (or a progress change) is not allowed from the
                build's current status; nothing was written. ``current``/``requested``
                name the statuses.
            ValidationError: a malformed field (refused before any SQL), or a progress
                with ``pending -> failed`` (nothing was written).
        """
        params: dict[str, Any] = {"id": check_uuid("id", id)}
        set_field(params, "status", status, lambda v: check_enum("status", v, BuildStatus))
        target: BuildStatus | None = params["status"]
        set_field(params, "progress", progress, lambda v: check_int("progress", v, low=0, high=100))
        if params["set_progress"]:
            if target is S.COMPLETED and params["progress"] != 100:
                raise ValidationError("a completed build has progress 100", field="progress")
            if target is S.PENDING:
                raise ValidationError("a pending build has no progress yet", field="progress")
        set_field(
            params, "artifacts", artifacts, lambda v: Jsonb(check_json_object("artifacts", v))
        )
        params["log"] = check_optional_text("log", log, max_len=MAX_LOG) or ""
        params["max_logs"] = MAX_LOGS
        params["progress_from"] = _PROGRESS_FROM[target]
        if target is not None:
            params["status"] = target.value
            params["allowed_from"] = _ALLOWED_FROM[target]
        else:
            params["allowed_from"] = _ANY

        row = await self._write_found("update", params, _event, noun="build")
        if row["id"] is None:
            raise _refused(params["id"], row["previous_status"], target, params["progress"])
        return _build(row)


def _refused(
    id: UUID, current: str, target: BuildStatus | None, progress: int | None
) -> ValidationError:
    """The error of an update the database refused: a wrong move, or a progress change."""
    if target is not None and current not in _ALLOWED_FROM[target]:
        return InvalidTransition(
            f"build {id} is {current}: it cannot move to {target.value}",
            current=current,
            requested=target.value,
        )
    if target is S.FAILED:  # from pending, with a progress
        return ValidationError(
            f"build {id} never started: it fails at progress 0, not {progress}",
            field="progress",
        )
    return InvalidTransition(
        f"build {id} is {current}: it cannot change its progress",
        current=current,
        requested=current,
    )
