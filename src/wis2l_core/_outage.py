"""Logging an outage once: one warning when a service stops answering, one info line when
it answers again, and nothing for each failed call or attempt in between (I/O-free)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import attrs

__all__ = ["Outage"]


@attrs.define
class Outage:
    """Whether a service is down, since when, and why; logs each change of state once.

    Attributes:
        service: the service's name, as ``extra={"service": ...}``.
        logger: where the two lines go.
        name: what the end-of-outage line names (default: ``service``).
        keep_error: keep the last failure as :attr:`error` (its traceback dropped); off
            for a caller that raises the failure on as a cause, traceback and all.
    """

    service: str
    logger: logging.Logger
    name: str = attrs.field(default=attrs.Factory(lambda self: self.service, takes_self=True))
    keep_error: bool = True
    started: float | None = attrs.field(default=None, init=False)
    """``time.monotonic()`` when the outage began; ``None`` while the service answers."""
    error: BaseException | None = attrs.field(default=None, init=False, repr=False)
    """The last failure of this outage (its traceback dropped, so it keeps no frames)."""

    @property
    def down(self) -> bool:
        """True from a failure until the next success."""
        return self.started is not None

    def failed(
        self,
        exc: BaseException,
        message: str,
        *args: object,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        """Record a failure; the first of an outage logs ``message % args`` as a warning
        (with ``extra`` beside ``service``)."""
        if self.keep_error:
            self.error = exc.with_traceback(None)
        if self.started is None:
            self.started = time.monotonic()
            self.logger.warning(message, *args, extra={"service": self.service, **(extra or {})})

    def recovered(self) -> None:
        """Record a success; the first after an outage logs how long it lasted."""
        started, self.started, self.error = self.started, None, None
        if started is not None:
            took = time.monotonic() - started
            self.logger.info(
                "%s available again after %.1f s",
                self.name,
                took,
                extra={"service": self.service, "outage_s": took},
            )
