"""AgentPool: creates, watches, replaces and scales the Ray actors that host a pool's agents.

A pool lives inside its queen's process. The queen owns the host actors, so they share its
fate as children share a supervisor's in OTP: if the queen dies they go too, and the restarted
queen builds them again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError

from actors._private.config import AgentPoolConfig
from actors._private.host import AgentHost
from actors._private.node_types import fits, node_type_that_fits, node_types
from models._private.core.resources import scheduler_demand
from models._private.core.retry import backoff_s
from models._private.core.tracing import TracingConfig

__all__ = ["AgentPool", "AgentSlot", "HostSlot"]

log = logging.getLogger(__name__)

PENDING, ALIVE, RESTARTING, DEAD = "pending", "alive", "restarting", "dead"

# A host that fails to start (its agent's constructor raised, or it died before answering) is
# tried again this many times in all, after 1, 2, 4 ... s; then its pool gives up until the
# next `swarm up`. These failures are the pool's, not the swarm's: they never count toward the
# supervisor's intensity, so one broken pool cannot take its healthy siblings down with it.
START_ATTEMPTS = 3
START_BACKOFF_S, MAX_START_BACKOFF_S = 1.0, 30.0


@dataclass(eq=False)
class AgentSlot:
    """The queen's view of one agent: where it runs and how busy it is."""

    id: str
    pool: str
    host: HostSlot
    capabilities: tuple[str, ...]
    max_concurrent: int
    inflight: int = 0
    done: int = 0
    failed: int = 0
    last_active: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class HostSlot:
    """One host actor and the agents on it."""

    id: str
    handle: Any
    agents: list[AgentSlot]
    state: str = PENDING
    created_at: float = field(default_factory=time.monotonic)
    reason: str = ""
    node_id: str | None = None
    restarts: int = 0
    local: bool = False  # an AgentHost inside the queen's process (pool `colocate`)
    seq: int = 0  # start order across the swarm, for rest_for_one


class _LocalMethod:
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn

    def remote(self, *args: Any) -> asyncio.Future:
        return asyncio.ensure_future(self.fn(*args))


class InProcessHandle:
    """An AgentHost in the queen's own process, called as an actor handle is: `.x.remote()`.

    `.remote()` returns an asyncio future instead of an ObjectRef; errors are the agent's own.
    """

    def __init__(self, host: AgentHost):
        self.ready = _LocalMethod(host.ready)
        self.ping = _LocalMethod(host.ping)
        self.handle = _LocalMethod(host.handle)


class AgentPool:
    """Keeps between `min_agents` and `max_agents` agents of one kind running.

    `on_ready(agents)` is called when agents can take tasks, `on_lost(agents)` when they
    cannot any more (the queen's dispatcher follows those two). A host that fails to start is
    the pool's own affair (see `START_ATTEMPTS`); hosts that die once running are the queen's
    supervisor's, which calls `restart` or `remove`. `state_of(id)` gives the last checkpoint
    of an agent, handed to its host when it (re)starts.
    """

    def __init__(
        self,
        namespace: str,
        swarm: str,
        config: AgentPoolConfig,
        on_ready: Callable[[list[AgentSlot]], None],
        on_lost: Callable[[list[AgentSlot]], None],
        state_of: Callable[[str], Any],
        start_order: itertools.count,
        trace: TracingConfig | None = None,
    ):
        self.namespace = namespace
        self.trace = trace  # the system's tracing, for each host's process
        self.swarm = swarm
        self.config = config
        self.capabilities = tuple(config.agent.capability_names)
        self.hosts: dict[str, HostSlot] = {}
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._state_of = state_of
        self._start_order = start_order
        self._host_seq = itertools.count()
        self._agent_seq = itertools.count()
        self._watchers: set[asyncio.Task] = set()
        self._start_failures = 0  # in a row, over the pool's hosts
        self.gave_up = ""  # why the pool stopped starting hosts, until `start` is called again
        self._infeasible: tuple[float, str] = (float("-inf"), "")  # (checked at, why), see unrunnable
        per = config.agents_per_actor
        self._actor_cls = ray.remote(AgentHost).options(
            max_restarts=0,  # the pool restarts hosts itself, so it can count and escalate
            max_concurrency=max(64, per * config.agent.max_concurrent_tasks + 16),
            **config.resources.ray_options(),
        )

    # -- size -----------------------------------------------------------------------------

    @property
    def agents(self) -> list[AgentSlot]:
        """Every agent of every host that is not dead."""
        return [a for h in self.hosts.values() if h.state != DEAD for a in h.agents]

    def count(self, *states: str) -> int:
        """Agents whose host is in one of `states` (all live states when none given)."""
        wanted = states or (PENDING, ALIVE, RESTARTING)
        return sum(len(h.agents) for h in self.hosts.values() if h.state in wanted)

    def start(self) -> None:
        """Creates hosts until `min_agents` agents exist (again trying a pool that gave up)."""
        self.gave_up, self._start_failures = "", 0
        for host in [h for h in self.hosts.values() if h.state == DEAD]:
            del self.hosts[host.id]
        while self.count() < self.config.min_agents:
            self._spawn(
                self._new_ids(min(self.config.agents_per_actor, self.config.min_agents - self.count()))
            )

    def _new_ids(self, n: int) -> list[str]:
        return [f"{self.swarm}.{self.config.name}.{next(self._agent_seq)}" for _ in range(n)]

    def _spawn(self, agent_ids: list[str], replacing: HostSlot | None = None) -> HostSlot:
        host_id = f"{self.swarm}.{self.config.name}.h{next(self._host_seq)}"
        states = {aid: state for aid in agent_ids if (state := self._state_of(aid)) is not None}
        args = (
            self.namespace,
            self.swarm,
            self.config.name,
            self.config.agent,
            agent_ids,
            states,
            self.trace,
        )
        if self.config.colocate:
            try:
                handle, reason = InProcessHandle(AgentHost(*args)), ""
            except Exception as e:  # the agent's constructor raised
                handle, reason = None, f"{type(e).__name__}: {e}"
        else:
            handle, reason = self._actor_cls.remote(*args), ""
        host = HostSlot(
            id=host_id, handle=handle, agents=[], local=self.config.colocate, seq=next(self._start_order)
        )
        host.agents = [
            AgentSlot(aid, self.config.name, host, self.capabilities, self.config.agent.max_concurrent_tasks)
            for aid in agent_ids
        ]
        if replacing is not None:
            host.restarts = replacing.restarts + 1
            host.state = RESTARTING
        self.hosts[host_id] = host
        if handle is None:
            asyncio.get_running_loop().call_soon(self._start_failed, host, reason)
            return host
        watcher = asyncio.get_running_loop().create_task(self._await_ready(host))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return host

    async def _await_ready(self, host: HostSlot) -> None:
        try:
            info = await host.handle.ready.remote()
        except RayActorError as e:  # the constructor raised, or the process died before answering
            if host.id in self.hosts:
                self._start_failed(host, _first_line(e))
            return
        if host.id not in self.hosts:  # removed while starting
            return
        host.state, host.reason, host.node_id = ALIVE, "", info["node_id"]
        self._start_failures = 0
        self._on_ready(host.agents)

    def _start_failed(self, host: HostSlot, error: str) -> None:
        if self.hosts.get(host.id) is not host or host.state == DEAD:
            return
        self._start_failures += 1
        host.state = DEAD
        if self._start_failures >= START_ATTEMPTS:
            host.reason = f"failed to start ({self._start_failures} times in a row, gave up): {error}"
            self.gave_up = host.reason
            log.error("pool %s.%s stops starting hosts: %s", self.swarm, self.config.name, error)
            return
        delay = backoff_s(self._start_failures, START_BACKOFF_S, MAX_START_BACKOFF_S)
        host.reason = f"failed to start: {error}; trying again in {delay:.1f} s"
        log.warning("host %s %s", host.id, host.reason)
        asyncio.get_running_loop().call_later(delay, self._start_again, host)

    def _start_again(self, host: HostSlot) -> None:
        if self.hosts.get(host.id) is host and host.state == DEAD and not self.gave_up:
            del self.hosts[host.id]
            self._spawn([a.id for a in host.agents], replacing=host)

    # -- failure --------------------------------------------------------------------------

    def remove(self, host: HostSlot, reason: str) -> None:
        """Kills `host` and forgets it."""
        if self.hosts.pop(host.id, None) is None:
            return
        was_alive = host.state == ALIVE
        host.state, host.reason = DEAD, reason
        if was_alive:
            self._on_lost(host.agents)
        if not host.local and host.handle is not None:
            try:
                ray.kill(host.handle, no_restart=True)
            except Exception:  # already gone
                pass

    def restart(self, host: HostSlot, reason: str) -> HostSlot:
        """Kills `host` and starts a new one with the same agents (ids, checkpoints)."""
        self.remove(host, reason)
        log.warning("restarting host %s: %s", host.id, reason)
        return self._spawn([a.id for a in host.agents], replacing=host)

    # -- scaling --------------------------------------------------------------------------

    def autoscale(self, backlog: int) -> int:
        """Grows by one host when the backlog per agent is over the threshold, or shrinks by
        one idle host above `min_agents`, off the head first. Returns the change in agents."""
        cfg = self.config
        if self.gave_up:
            return 0
        live = self.count()
        ready = max(1, self.count(ALIVE))
        if backlog > cfg.scale_up_backlog * ready and live < cfg.max_agents and not self.count(PENDING):
            return len(self._spawn(self._new_ids(min(cfg.agents_per_actor, cfg.max_agents - live))).agents)
        if backlog == 0 and live > cfg.min_agents:
            idle_since = time.monotonic() - cfg.scale_down_idle_s
            for host in self._scale_down_order():
                idle = host.state == ALIVE and all(
                    a.inflight == 0 and a.last_active < idle_since for a in host.agents
                )
                if idle and live - len(host.agents) >= cfg.min_agents:
                    self.remove(host, "scaled down (idle)")
                    return -len(host.agents)
        return 0

    def _scale_down_order(self) -> list[HostSlot]:
        """The hosts that may be given back, the first to go first: those on nodes the
        autoscaler may remove, newest first; then, while the pool also runs elsewhere, those
        on the head that leave `min_agents` on it; once it runs only on the head, any.

        A host on the head costs no node, while one kept on a worker keeps that node busy, so it
        is never idle and never given back: a pool that shrank from the head would leave its
        `min_agents` on workers for good."""
        newest_first = list(reversed(self.hosts.values()))
        head = _head_node_id()
        if not head:
            return newest_first
        elsewhere = [h for h in newest_first if h.node_id != head]
        if not any(h.state != DEAD and h.node_id for h in elsewhere):
            return newest_first
        on_head = [h for h in newest_first if h.node_id == head]
        kept = sum(len(h.agents) for h in on_head if h.state == ALIVE)
        spare = []
        for host in on_head:  # the autoscaler removes one host a tick: never below the floor
            if kept - len(host.agents) >= self.config.min_agents:
                spare.append(host)
                kept -= len(host.agents)
        return elsewhere + spare

    # -- reporting ------------------------------------------------------------------------

    def pending_reason(self, host: HostSlot) -> str:
        """Why a host is still not running, in terms of the cluster's resources."""
        if time.monotonic() - host.created_at < self.config.ready_timeout_s:
            return "starting"
        demand = scheduler_demand(self.config.resources.ray_options())
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        if not any(fits(demand, n) for n in nodes):
            if kind := _node_type_that_fits(demand):
                return f"waiting for the autoscaler to add a {kind!r} node for {demand}"
            return f"infeasible: no node offers {demand}; nodes offer {[_short(n) for n in nodes]}"
        available = ray.available_resources()
        return (
            f"waiting for resources: needs {demand} per actor, available now "
            f"{ {k: round(available.get(k, 0.0), 3) for k in demand} }"
        )

    def unrunnable(self) -> str:
        """Why no agent of the pool can ever run a task (it gave up starting, or its resources
        are infeasible on this cluster and its autoscaler); "" while one may."""
        if self.gave_up:
            return self.gave_up
        if self.count(ALIVE):
            return ""
        # The hosts share one demand, so one answers for all. Asking the cluster is a GCS
        # round trip: at most one a second, not one per submit.
        checked_at, why = self._infeasible
        if time.monotonic() - checked_at > 1.0:
            waiting = [h for h in self.hosts.values() if h.state in (PENDING, RESTARTING)]
            reason = self.pending_reason(waiting[0]) if waiting else ""
            why = reason if reason.startswith("infeasible") else ""
            self._infeasible = (time.monotonic(), why)
        return why

    def describe(self) -> list[dict[str, Any]]:
        """One row per agent for `swarm status`."""
        rows = []
        for host in self.hosts.values():
            reason = self.pending_reason(host) if host.state in (PENDING, RESTARTING) else host.reason
            for a in host.agents:
                rows.append(
                    {
                        "agent": a.id,
                        "pool": self.config.name,
                        "host": host.id,
                        "state": host.state,
                        "node": (host.node_id or "")[:8],
                        "inflight": a.inflight,
                        "done": a.done,
                        "failed": a.failed,
                        "restarts": host.restarts,
                        "reason": reason,
                        "capabilities": list(a.capabilities),
                    }
                )
        return rows

    def stop(self) -> None:
        """Kills every host of the pool."""
        for host in list(self.hosts.values()):
            self.remove(host, "pool stopped")
        for w in self._watchers:
            w.cancel()


def _node_type_that_fits(demand: dict[str, float]) -> str:
    """A node type the cluster's autoscaler may still add that fits `demand`, else ""."""
    try:
        gcs_address = ray.get_runtime_context().gcs_address
    except Exception:  # not connected: no cluster, no autoscaler
        return ""
    return node_type_that_fits(demand, node_types(gcs_address))


# The head node's id ("" for none), asked once: it is the cluster's while this process lives.
_head: list[str] = []


def _head_node_id() -> str:
    """The id of the cluster's head node (the one the autoscaler never removes), else ""."""
    if not _head:
        try:
            nodes = ray.nodes()
        except Exception:  # not connected: no cluster, no head
            return ""
        alive = [n for n in nodes if n.get("Alive")]
        heads = [n["NodeID"] for n in alive if "node:__internal_head__" in n.get("Resources", {})]
        _head.append(heads[0] if heads else "")
    return _head[0]


def _short(resources: dict[str, float]) -> dict[str, float]:
    keep = ("CPU", "GPU", "memory")
    return {
        k: (round(v) if k != "memory" else f"{v / 2**30:.1f}GiB")
        for k, v in resources.items()
        if k in keep or k.startswith("accelerator_type")
    }


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[-1][:300] if text else type(err).__name__
