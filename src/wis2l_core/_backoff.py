"""One I/O-free exponential backoff, used by every loop that waits before trying again.

Modelled on psycopg_pool's ``AttemptWithBackoff``: the object only computes delays; the
caller sleeps. Each loop names its caps with one of the presets below, so the policy is
read in one place::

    backoff = Backoff.reconnect()
    while True:
        try:
            await connect()
        except OSError:
            await asyncio.sleep(backoff.next())
            continue
        backoff.reset()
"""

from __future__ import annotations

import random

import attrs

__all__ = ["Backoff"]


@attrs.define
class Backoff:
    """Delays that double from ``initial`` up to ``cap``, with optional jitter.

    Attributes:
        initial: the first delay, in seconds.
        cap: the largest delay, in seconds.
        jitter: a fraction in [0, 1]: each delay is drawn from ``[d * (1 - jitter), d]``,
            so processes that failed together do not retry in step.
    """

    initial: float = 0.1
    cap: float = 5.0
    jitter: float = 0.0
    _current: float = attrs.field(init=False, default=0.0, repr=False)

    @classmethod
    def reconnect(cls) -> Backoff:
        """For re-establishing a server connection, a stream or a consumer: 0.1 s doubling
        to 5 s, with 20 % jitter."""
        return cls(initial=0.1, cap=5.0, jitter=0.2)

    @classmethod
    def poll(cls) -> Backoff:
        """For polling another process's progress (a lock held elsewhere): 5 ms to 100 ms."""
        return cls(initial=0.005, cap=0.1)

    def next(self) -> float:
        """The delay before the next attempt; each call doubles it, up to ``cap``."""
        self._current = self.initial if not self._current else min(self._current * 2, self.cap)
        if self.jitter:
            return self._current * (1 - self.jitter * random.random())  # noqa: S311
        return self._current

    def reset(self) -> None:
        """Start again from ``initial`` (after an attempt that worked)."""
        self._current = 0.0

    @property
    def current(self) -> float:
        """The last delay handed out before jitter (0 before the first)."""
        return self._current
