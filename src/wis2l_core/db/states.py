"""Status machines as data: which moves are allowed, in the form the update queries take."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

__all__ = ["allowed_from"]

S = TypeVar("S", bound=enum.StrEnum)


def allowed_from(transitions: Mapping[S, frozenset[S]]) -> dict[S, list[str]]:
    """For each target status, the statuses ``update(status=target)`` is accepted from.

    That is the real moves into the target, plus the target itself while it is not final
    (asking for ``building`` again is a no-op for the status, not an error). The lists hold
    the values, ready for an ``= ANY(%(allowed_from)s::text[])`` test in SQL.
    """
    return {
        target: [
            s.value
            for s in transitions
            if target in transitions[s] or (s is target and transitions[s])
        ]
        for target in transitions
    }
