"""Least-loaded agent choice per capability, O(1) per task whatever the number of agents."""

from __future__ import annotations

from actors._private.pool import ALIVE, AgentSlot

__all__ = ["Dispatcher"]


class Dispatcher:
    """Tracks the agents that can take one more task, bucketed by how many they run.

    For each capability, `levels[n]` holds the alive agents running `n` tasks that could run
    one more. `acquire` takes from the lowest non-empty level; an agent re-enters at the end
    of its new level, so agents with equal load take turns.
    """

    def __init__(self) -> None:
        self._levels: dict[str, list[dict[str, AgentSlot]]] = {}
        self._alive: dict[str, int] = {}

    def add(self, agents: list[AgentSlot]) -> None:
        """Agents that became able to take tasks."""
        for a in agents:
            for cap in a.capabilities:
                self._alive[cap] = self._alive.get(cap, 0) + 1
            self._place(a, a.inflight)

    def remove(self, agents: list[AgentSlot]) -> None:
        """Agents that can take no more tasks (their host died or was removed)."""
        for a in agents:
            for cap in a.capabilities:
                self._alive[cap] -= 1
            self._unplace(a, a.inflight)

    def alive(self, capability: str) -> int:
        """Alive agents offering `capability`."""
        return self._alive.get(capability, 0)

    def has_free(self, capability: str) -> bool:
        """Whether some alive agent offering `capability` can take a task now."""
        return any(self._levels.get(capability, ()))

    def acquire(self, capability: str) -> AgentSlot | None:
        """The least-loaded agent with room for one more task, now counted as busier."""
        for bucket in self._levels.get(capability, ()):
            if bucket:
                agent = next(iter(bucket.values()))
                self._unplace(agent, agent.inflight)
                agent.inflight += 1
                self._place(agent, agent.inflight)
                return agent
        return None

    def release(self, agent: AgentSlot) -> None:
        """An agent finished one task."""
        self._unplace(agent, agent.inflight)
        agent.inflight -= 1
        self._place(agent, agent.inflight)

    def _place(self, a: AgentSlot, level: int) -> None:
        if a.host.state != ALIVE or level >= a.max_concurrent:
            return
        for cap in a.capabilities:
            levels = self._levels.setdefault(cap, [])
            while len(levels) <= level:
                levels.append({})
            levels[level][a.id] = a

    def _unplace(self, a: AgentSlot, level: int) -> None:
        for cap in a.capabilities:
            levels = self._levels.get(cap, [])
            if level < len(levels) and levels[level].get(a.id) is a:  # not its restarted namesake
                del levels[level][a.id]
