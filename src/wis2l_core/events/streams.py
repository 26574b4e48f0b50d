"""The JetStream stream's administration: its configuration, creating or updating it,
raising its replicas, and waiting out a replicated stream's leader election.

:class:`EventBus` owns one :class:`Stream` and calls :meth:`Stream.ensure` each time the
connection comes up (and when a publish or a consumer finds the stream gone).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import nats.js.errors
from nats.js.api import StorageType, StreamConfig, StreamInfo
from nats.js.client import JetStreamContext

from wis2l_core.config import Settings
from wis2l_core.errors import ConfigError, ServiceUnavailable
from wis2l_core.events._errors import ELECTING, map_nats_errors
from wis2l_core.subjects import stream_subjects

__all__ = ["API_TIMEOUT", "ELECTION_PROBE", "Stream"]

log = logging.getLogger("wis2l_core.events")

API_TIMEOUT = 5.0
"""Seconds a JetStream API call or publish acknowledgement may take."""
ELECTION_PROBE = 0.5
"""Seconds one info request about a replicated stream may take: while the stream elects
a leader nobody answers, so it is asked again (for up to ``_ELECTION_WAIT``)."""
_ELECTION_WAIT = 10.0
"""Seconds :meth:`Stream.ensure` waits for a replicated stream's leader election
(nats-server 2.15 takes 5-7 s after its leader dies)."""
_NOT_CLUSTERED = 10074  # "replicas > 1 not supported in non-clustered mode"
_NO_PEERS = frozenset({10005, 10023})  # no suitable peers; insufficient resources


class Stream:
    """The one stream wis2l-core publishes to, as ``settings`` describe it.

    Args:
        settings: ``namespace``, ``stream_name``, ``stream_duplicate_window`` and
            ``stream_replicas`` are used.
        connected: whether the connection is up (a leader election is not waited out on a
            connection that went down).
    """

    def __init__(self, settings: Settings, connected: Callable[[], bool]) -> None:
        self.settings = settings
        self._connected = connected
        self._replicas_logged = False

    def config(self) -> StreamConfig:
        """The configuration the stream must have (name, subjects, storage, dedup window,
        replicas)."""
        return StreamConfig(
            name=self.settings.stream_name,
            subjects=[stream_subjects(self.settings.namespace)],
            storage=StorageType.FILE,
            duplicate_window=self.settings.stream_duplicate_window,
            num_replicas=self.settings.stream_replicas,
        )

    async def ensure(self, js: JetStreamContext, probe: JetStreamContext | None = None) -> None:
        """Create the stream, or update it (keeping its messages) if its config differs.

        Only the fields wis2l-core owns are compared and set (subjects, duplicate window
        and replicas); limits an operator set on the stream are kept. Replicas are only
        ever raised to ``stream_replicas``: a stream with more (an operator's choice) keeps
        them, and that is logged. A raise the cluster cannot place yet (too few servers
        up) is logged and tried again on the next reconnect; the stream keeps working
        meanwhile. Storage cannot change in place: a memory stream is logged, not replaced.

        Raises:
            ServiceUnavailable: NATS or JetStream does not answer, or refuses the config
                (including a stream of several replicas while too few servers are up).
            ConfigError: the stream name or namespace is one NATS refuses, or
                ``stream_replicas`` is above 1 on a server that is not in a cluster.
        """
        want = self.config()
        name = self.settings.stream_name
        with map_nats_errors(f"stream {name}", config="WIS2L_STREAM"):
            try:
                info = await self._stream_info(js, probe)
            except nats.js.errors.NotFoundError:
                try:
                    await js.add_stream(want)
                    log.info(
                        "created stream %s (%d replica(s))",
                        name,
                        want.num_replicas,
                        extra={"stream": name},
                    )
                    await self._until_led(js)
                    return
                except nats.js.errors.APIError as exc:
                    self._refused(exc)
                    if not isinstance(exc, nats.js.errors.BadRequestError):
                        raise
                    info = await js.stream_info(name)  # another process created it first
            have = info.config
            if have.storage != StorageType.FILE:
                log.warning("stream %s uses %s storage, not file", name, have.storage)
            drift = (
                sorted(have.subjects or []) != sorted(want.subjects or [])
                or abs((have.duplicate_window or 0) - want.duplicate_window) > 1e-3
            )
            if drift:
                have = have.evolve(subjects=want.subjects, duplicate_window=want.duplicate_window)
                await js.update_stream(have)
                log.info("updated stream %s to the wanted config", name, extra={"stream": name})
            await self._reconcile_replicas(js, have)

    async def _stream_info(
        self, js: JetStreamContext, probe: JetStreamContext | None
    ) -> StreamInfo:
        """The stream's info; a replicated stream's is asked again while it elects a
        leader (no answer, or JetStream's 503), for up to ``_ELECTION_WAIT`` seconds, so
        callers that publish next (the relay, ``EventBus.publish``) do so as soon as it can."""
        name = self.settings.stream_name
        if self.settings.stream_replicas == 1 or probe is None:
            return await js.stream_info(name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _ELECTION_WAIT
        while True:
            try:
                return await probe.stream_info(name)
            except ELECTING:
                if loop.time() > deadline or not self._connected():
                    raise
            await asyncio.sleep(0.1)

    async def _until_led(self, js: JetStreamContext) -> None:
        """Wait (up to ``API_TIMEOUT``) until a new replicated stream has elected its
        leader: until then JetStream answers its publishes with "no responders"."""
        if self.settings.stream_replicas == 1:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + API_TIMEOUT
        while loop.time() < deadline:
            info = await js.stream_info(self.settings.stream_name)
            if info.cluster is None or info.cluster.leader:
                return
            await asyncio.sleep(0.05)

    async def _reconcile_replicas(self, js: JetStreamContext, have: StreamConfig) -> None:
        """Raise the stream's replicas to ``stream_replicas``; never lower them."""
        name, want = self.settings.stream_name, self.settings.stream_replicas
        current = have.num_replicas or 1
        extra = {"stream": name, "replicas": current}
        if current > want:
            if not self._replicas_logged:
                self._replicas_logged = True
                log.warning(
                    "stream %s has %d replicas, more than WIS2L_STREAM_REPLICAS=%d: kept "
                    "(wis2l-core never lowers them; lower them with the nats CLI if meant)",
                    name,
                    current,
                    want,
                    extra=extra,
                )
            return
        if current == want:
            return
        try:
            await js.update_stream(have.evolve(num_replicas=want))
        except nats.js.errors.APIError as exc:
            if exc.err_code == _NOT_CLUSTERED:
                self._refused(exc)
            log.warning(
                "cannot raise stream %s from %d to %d replicas yet (%s); it keeps working "
                "with %d, and the raise is tried again on the next reconnect",
                name,
                current,
                want,
                exc.description or exc,
                current,
                extra=extra,
            )
            return
        log.info("raised stream %s from %d to %d replicas", name, current, want, extra=extra)

    def _refused(self, exc: nats.js.errors.APIError) -> None:
        """Turn JetStream's refusals of the replica count into typed errors."""
        name, want = self.settings.stream_name, self.settings.stream_replicas
        if exc.err_code == _NOT_CLUSTERED:
            raise ConfigError(
                f"nats: stream {name}: WIS2L_STREAM_REPLICAS={want} needs a NATS cluster; "
                f"the server is not clustered ({exc.description})",
                variable="WIS2L_STREAM_REPLICAS",
            ) from exc
        if exc.err_code in _NO_PEERS:
            raise ServiceUnavailable(
                f"nats: stream {name}: {want} replica(s) need {want} JetStream servers up "
                f"in the cluster ({exc.description})",
                service="nats",
            ) from exc
