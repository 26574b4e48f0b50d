"""Status machines as data: which moves are allowed, in the form the update queries take."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

__all__ = ["allowed_from"]

S = TypeVar("S", bound=enum.StrEnum)


def allowed_from(transitions: Mapping[S, frozenset[S]]) -> dict[S, list[str]]:
    """For each target status, the statuses ``update(status=target)`` is accepted from.

    Only real moves count: asking for the status an entity already has is an
    ``InvalidTransition`` too, so moving a build to ``building`` tells exactly one worker
    that the build is its own. The lists hold the values, ready for an
    ``= ANY(%(allowed_from)s::text[])`` test in SQL.
    """
    return {
        target: [s.value for s in transitions if target in transitions[s]] for target in transitions
    }
