"""HealthMonitor: pings a swarm's agents, replaces the dead and reports health to the registry."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from actors._private.config import SwarmConfig
from actors._private.metrics import swarm_health
from actors._private.pool import ALIVE
from actors._private.registry import DEGRADED, FAILED, HEALTHY, UNREACHABLE
from models._private.core import names
from models._private.core.metrics import safely

__all__ = ["HealthMonitor"]

log = logging.getLogger(__name__)


class HealthMonitor:
    """One per swarm; a named, detached Ray actor `health:<swarm>`.

    It lives apart from the queen so that a queen that is busy, stuck or dead is itself seen
    and reported: the registry then stops routing to the swarm until it answers again.
    """

    def __init__(self, namespace: str, swarm: SwarmConfig):
        self.namespace = namespace
        self.swarm = swarm.name
        self.config = swarm.health
        self.rounds = 0
        self.replaced = 0
        self.last: dict[str, Any] = {}
        self._loop: asyncio.Task | None = None

    async def start(self) -> None:
        """Starts the monitoring loop; safe to call again."""
        if self._loop is None or self._loop.done():
            self._loop = asyncio.get_running_loop().create_task(self._run())

    async def report(self) -> dict[str, Any]:
        """The last round: health, reason, when, and how many hosts were replaced so far."""
        await self.start()
        return {**self.last, "rounds": self.rounds, "replaced": self.replaced}

    async def check(self) -> dict[str, Any]:
        """Runs one round now and reports it."""
        await self._round()
        return await self.report()

    async def _run(self) -> None:
        while True:
            try:
                await self._round()
            except Exception:
                log.exception("health round failed for swarm %s", self.swarm)
            await asyncio.sleep(self.config.period_s)

    async def _round(self) -> None:
        queen = ray.get_actor(names.queen(self.swarm), namespace=self.namespace)
        registry = ray.get_actor(names.REGISTRY, namespace=self.namespace)
        try:
            report = await asyncio.wait_for(queen.report.remote(), self.config.queen_timeout_s)
        except Exception as e:
            reason = f"queen did not answer within {self.config.queen_timeout_s} s: {type(e).__name__}"
            self._record(UNREACHABLE, reason)
            await registry.mark.remote(self.swarm, UNREACHABLE, reason)
            return
        hosts, registration, load = report["hosts"], report["registration"], report["load"]
        if report["state"] == "failed":  # escalated: the queen holds no agents until it recovers
            await registry.heartbeat.remote(registration, load, FAILED, report["reason"])
            self._record(FAILED, report["reason"])
            return
        timeout = self.config.ping_timeout_s
        alive = [(hid, h) for hid, h, state in hosts if state == ALIVE]
        pings = await asyncio.gather(
            *(asyncio.wait_for(h.ping.remote(), timeout) for _, h in alive), return_exceptions=True
        )
        dead = [hid for (hid, _), p in zip(alive, pings, strict=True) if isinstance(p, BaseException)]
        if dead:
            reason = f"no answer to ping within {timeout} s"
            self.replaced += await queen.replace_hosts.remote(dead, reason)
        not_alive = sum(1 for *_, state in hosts if state != ALIVE) + len(dead)
        health = DEGRADED if not_alive else HEALTHY
        reason = f"{not_alive} of {len(hosts)} agent hosts not alive" if not_alive else ""
        await registry.heartbeat.remote(registration, load, health, reason)
        self._record(health, reason)

    def _record(self, health: str, reason: str) -> None:
        self.rounds += 1
        self.last = {"health": health, "reason": reason, "at": time.time()}
        safely(swarm_health, self.namespace, self.swarm, health)
