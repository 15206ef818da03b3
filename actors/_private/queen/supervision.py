"""How a queen supervises its agent hosts (a failed child restarted per strategy, escalation when
they fail too often, recovery after it), and the background round that keeps the swarm in
shape: autoscaling, queued tasks that no agent here can ever run, journal compaction, gauges."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING

from actors._private.pool import ALIVE, DEAD, PENDING, RESTARTING
from actors._private.queen.supervisor import FAILED
from actors._private.registry import FAILED as SWARM_FAILED
from actors._private.task import TaskStatus
from models._private.core import names

if TYPE_CHECKING:
    from actors._private.pool import AgentPool, HostSlot

__all__ = ["TICK_S", "Supervision"]

AGENT_STATES = (ALIVE, PENDING, RESTARTING, DEAD)
TICK_S = 0.5  # seconds between background rounds
log = logging.getLogger(__name__)


class Supervision:
    """`SwarmQueen`'s supervision and background round (a part of the queen, not an actor of
    its own)."""

    def _hosts(self) -> list[HostSlot]:
        """Every host of the swarm in the order it started, but those that could not start."""
        hosts = (h for p in self.pools.values() for h in p.hosts.values() if h.state != DEAD)
        return sorted(hosts, key=lambda h: h.seq)

    def _pool_of(self, host: HostSlot) -> AgentPool | None:
        for pool in self.pools.values():
            if pool.hosts.get(host.id) is host:
                return pool
        return None

    def _child_failed(self, host: HostSlot, reason: str) -> None:
        """A host died, hung or failed to start: restart per strategy, or escalate."""
        pool = self._pool_of(host)
        if pool is None:
            return  # already restarted or removed
        if self.supervisor.state == FAILED:
            pool.remove(host, reason)
            return
        if not self.supervisor.allow_restart():
            self._escalate(self.supervisor.escalate(f"{host.id}: {reason}"))
            return
        strategy = self.supervisor.config.strategy
        for victim in self.supervisor.victims(host, self._hosts()):
            victim_pool = self._pool_of(victim)
            why = reason if victim is host else f"{strategy} restart after {host.id} failed"
            victim_pool.restart(victim, why)
            self.metrics.restarted(victim_pool.config.name)

    def _escalate(self, reason: str) -> None:
        log.error("swarm %s failed: %s", self.name, reason)
        self.metrics.escalated()
        for pool in self.pools.values():
            pool.stop()
        self._actor(names.REGISTRY).mark.remote(self.name, SWARM_FAILED, reason)  # no need to wait
        for rec in list(self.book.records.values()):
            if rec.result.status is TaskStatus.QUEUED:
                self._spawn(self._reroute(rec))
        if self.supervisor.config.recover_after_s is not None:
            asyncio.get_running_loop().call_later(self.supervisor.config.recover_after_s, self._recover)

    def _recover(self) -> None:
        if self.supervisor.state != FAILED:
            return
        log.warning("swarm %s rebuilds its agents after escalation", self.name)
        self.supervisor.recover()
        for pool in self.pools.values():
            pool.start()

    # -- the background round -------------------------------------------------------------

    def _gauges(self) -> None:
        agents: Counter[tuple[str, str]] = Counter({(p, s): 0 for p in self.pools for s in AGENT_STATES})
        for pool in self.pools.values():
            for host in pool.hosts.values():
                agents[(pool.config.name, host.state)] += len(host.agents)
        running = sum(a.inflight for p in self.pools.values() for a in p.agents)
        depths = {cap: self.queue.depth(cap) for cap in sorted(self.local_caps)}
        self.metrics.gauges(depths, running, dict(agents), self.delegator.breaker_states())

    async def _tick_loop(self) -> None:
        limit = self.config.journal.compact_after_mb * 2**20
        base = 0  # size right after the last compaction
        compaction: asyncio.Task | None = None

        async def compact() -> None:
            nonlocal base
            try:
                await self.book.compact()
            except Exception:
                log.exception("compaction failed in swarm %s", self.name)
                return
            base = self.journal.size_bytes()
            self.journal.expect_compaction_at(max(limit, 2 * base))

        self.journal.expect_compaction_at(limit)
        while True:
            await asyncio.sleep(TICK_S)
            try:
                if self.supervisor.state != FAILED:
                    for pool in self.pools.values():
                        pool.autoscale(sum(self.queue.depth(c) for c in pool.capabilities))
                    for cap, depth in self.queue.depths().items():
                        if depth and (reason := self._unrunnable(cap)):
                            self._spawn(self._give_up_queued(cap, reason))
                # Compact past the limit, and only once the journal has doubled since the last
                # compaction, so that live state above the limit is not rewritten every tick.
                # In the background: a tick never waits on the disk.
                idle = compaction is None or compaction.done()
                if idle and self.journal.size_bytes() > max(limit, 2 * base):
                    compaction = self._spawn(compact())
                self._gauges()
            except Exception:
                log.exception("background round failed in swarm %s", self.name)
