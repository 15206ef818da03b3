"""MetaRegistry: discovery by capability, routing between swarms, health, a global KV store."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import ray
from ray.experimental import internal_kv

from actors._private.config import RegistryConfig
from actors._private.services import SERVICE_KEY_KEY
from models._private.core import names
from models._private.core.errors import DelegationError, SwarmNotFoundError, UnknownCapabilityError
from models._private.core.journal import Journal
from models._private.core.names import capability_offered

__all__ = ["MetaRegistry"]

log = logging.getLogger(__name__)

# Keys whose values are secrets (the agents' API key): never journaled, kept by `_Secrets`.
SECRET_KEYS = frozenset({SERVICE_KEY_KEY})

HEALTHY, DEGRADED, FAILED, UNREACHABLE = "healthy", "degraded", "failed", "unreachable"
_HEALTH_RANK = {HEALTHY: 0, DEGRADED: 1}


@dataclass
class _Swarm:
    name: str
    capabilities: list[str]
    priority: int = 0
    description: str = ""
    health: str = HEALTHY
    reason: str = ""
    queued: int = 0
    running: int = 0
    slots: int = 0
    routed_since_heartbeat: int = 0
    registered_at: float = field(default_factory=time.time)
    last_heartbeat: float = field(default_factory=time.monotonic)

    def load(self) -> float:
        """Work per agent slot, counting tasks routed here since the last report."""
        return (self.queued + self.running + self.routed_since_heartbeat) / max(1, self.slots)


class MetaRegistry:
    """The system's directory; a named, detached Ray actor `registry` per namespace.

    Queens register their capabilities; health monitors heartbeat load and health. A
    heartbeat carries the whole registration too, so a restarted registry rebuilds its table
    within one health period without any journal.

    Conflict resolution, when several swarms offer a capability: only swarms whose heartbeat
    is fresh and whose health is not failed or unreachable are candidates; healthy ones are
    preferred to degraded ones; among those, `conflict_policy` decides:
    `least_loaded` (default) takes the lowest (queued + running) per agent slot, then the
    higher `priority`, then the name; `priority` takes the highest priority, then the least
    loaded; `round_robin` rotates through them. Swarms the task already visited are skipped,
    which with the hop limit makes delegation loops impossible.

    `generation` counts the changes that can move a routing decision other than load (a swarm
    registered or removed, its capabilities, priority or health changed, a stale one heard
    from again); each change is pushed to every registered queen (`routes_changed`), whose
    delegator caches the routes `routing` marks as not load-dependent until then.
    """

    def __init__(
        self, config: RegistryConfig, system: dict[str, Any] | None = None, journal_uri: str | None = None
    ):
        self.config = config
        self.system = system or {}
        self.swarms: dict[str, _Swarm] = {}
        self.kv: dict[str, tuple[Any, int]] = {}
        self._turn: dict[str, int] = {}
        self.started_at = time.time()
        # Starts at the clock so that a restarted registry never repeats an earlier generation.
        self.generation = time.time_ns()
        self._queens: dict[str, Any] = {}  # swarm -> its queen's handle, for `routes_changed`
        # The key-value store is the one thing heartbeats cannot rebuild: journal it, all but
        # its secrets, which Ray's own store keeps.
        self.journal = Journal(journal_uri, system=self.system.get("namespace", "-")) if journal_uri else None
        self._secrets = _Secrets()
        in_clear: dict[str, tuple[Any, int]] = {}  # secrets an older version journaled
        scrub = False
        for entry in self.journal.read() if self.journal else ():
            scrub |= entry["key"] in SECRET_KEYS
            kv = in_clear if entry["key"] in SECRET_KEYS else self.kv
            if entry["k"] == "put":
                kv[entry["key"]] = (entry["value"], entry["version"])
            else:
                kv.pop(entry["key"], None)
        secrets = self._secrets.read()
        if scrub:  # moved where they belong, then the journal rewritten without them
            for key, (value, version) in in_clear.items():
                if key not in secrets:
                    self._secrets.put(key, value, version)
                    secrets[key] = (value, version)
            self.journal.rewrite_now(*[self._put_entry(k) for k in self.kv])
        self.kv.update(secrets)

    # -- membership -----------------------------------------------------------------------

    def register(self, registration: dict[str, Any]) -> None:
        """Adds or refreshes a swarm: name, capabilities, priority, description."""
        # A (re)registering queen is answering: whatever marked it unreachable is over.
        if self._update(registration, HEALTHY, ""):
            self._changed()

    def heartbeat(
        self, registration: dict[str, Any], load: dict[str, int], health: str, reason: str = ""
    ) -> None:
        """Records a swarm's load and health (and re-registers it if the table was lost)."""
        changed = self._update(registration, health, reason)
        entry = self.swarms[registration["name"]]
        entry.queued, entry.running, entry.slots = load["queued"], load["running"], load["slots"]
        entry.routed_since_heartbeat = 0
        if changed:
            self._changed()

    def _update(self, registration: dict[str, Any], health: str, reason: str) -> bool:
        """Adds or refreshes a swarm's entry; returns whether routing may see it differently."""
        name = registration["name"]
        entry = self.swarms.get(name)
        if entry is None:
            self.swarms[name] = entry = _Swarm(**registration)
            changed = True
        else:
            changed = any(getattr(entry, k) != v for k, v in registration.items() if k != "description")
            # A stale swarm was out of routing: its return is a change too (its going stale is
            # not pushed, having no event: `route_cache_ttl_s` bounds a route cached to it).
            changed |= time.monotonic() - entry.last_heartbeat > self.config.stale_after_s
            for k, v in registration.items():
                setattr(entry, k, v)
        changed |= entry.health != health
        entry.health, entry.reason = health, reason
        entry.last_heartbeat = time.monotonic()
        return changed

    def mark(self, swarm: str, health: str, reason: str) -> None:
        """Sets a swarm's health without a load report (e.g. its queen is unreachable)."""
        if swarm in self.swarms:
            changed = self.swarms[swarm].health != health
            self.swarms[swarm].health, self.swarms[swarm].reason = health, reason
            if changed:
                self._changed()

    def deregister(self, swarm: str) -> None:
        """Removes a swarm from routing."""
        if self.swarms.pop(swarm, None) is not None:
            self._queens.pop(swarm, None)
            self._changed()

    def _changed(self) -> None:
        """A routing decision may have moved: a new generation, pushed to every queen (a push
        that fails is let be: a queen made anew has no cached routes)."""
        self.generation += 1
        if not ray.is_initialized():
            return  # a registry in a test's process has no queens to tell
        for swarm in list(self.swarms):
            try:
                queen = self._queens.get(swarm)
                if queen is None:
                    # The system's namespace: the registry's own runtime one is its creator's.
                    ns = self.system.get("namespace") or ray.get_runtime_context().namespace
                    queen = self._queens[swarm] = ray.get_actor(names.queen(swarm), namespace=ns)
                queen.routes_changed.remote(self.generation)
            except Exception as e:
                log.warning("could not tell swarm %s that routing changed: %r", swarm, e)
                self._queens.pop(swarm, None)

    # -- discovery and routing ------------------------------------------------------------

    def discover(self, capability: str) -> list[str]:
        """Routable swarms offering `capability` (itself or a family covering it), best first."""
        return [s.name for s in self._candidates(capability, [])]

    def route(self, capability: str, visited: list[str]) -> str:
        """Picks the swarm to run a task for `capability`, skipping `visited` swarms.

        Raises:
            UnknownCapabilityError: no registered swarm offers the capability.
            DelegationError: swarms offer it, but all are visited, stale, failed or unreachable.
        """
        return self.routing(capability, visited)["swarm"]

    def routing(self, capability: str, visited: list[str], count: int = 1) -> dict[str, Any]:
        """`route` for `count` tasks at once, with what a cache of the decision needs.

        Returns:
            swarms: where each task goes, chosen task by task as `count` calls of `route`
            would (least-loaded balancing and round-robin rotation hold within the batch);
            swarm: the first task's; generation: the registry's `generation`; cacheable:
            whether the choice holds until the generation changes (no other candidate, or one
            strictly preferred by health and, under `priority`, priority: load cannot move it).

        Raises:
            UnknownCapabilityError, DelegationError: as `route`.
        """
        offering = [s for s in self.swarms.values() if capability_offered(s.capabilities, capability)]
        if not offering:
            raise UnknownCapabilityError(capability, self.capabilities())
        candidates = self._candidates(capability, visited)
        if not candidates:
            why = {s.name: ("visited" if s.name in visited else self._unroutable(s) or "?") for s in offering}
            raise DelegationError(capability, f"no routable swarm offers it: {why}", list(visited))
        policy = self.config.conflict_policy
        chosen: list[str] = []
        for n in range(count):
            if n:  # the choices before this one count as load (least_loaded, priority's ties)
                candidates = self._candidates(capability, visited)
            if policy == "round_robin":
                best = [c for c in candidates if c.health == candidates[0].health]
                turn = self._turn.get(capability, 0)
                self._turn[capability] = turn + 1
                pick = best[turn % len(best)]
            else:
                pick = candidates[0]
            pick.routed_since_heartbeat += 1
            chosen.append(pick.name)
        cacheable = len(candidates) == 1
        if len(candidates) > 1 and policy == "priority":
            first, second = candidates[0], candidates[1]
            rank = lambda s: (_HEALTH_RANK[s.health], -s.priority)  # noqa: E731
            cacheable = rank(first) < rank(second)
        elif len(candidates) > 1 and policy == "least_loaded":
            cacheable = _HEALTH_RANK[candidates[0].health] < _HEALTH_RANK[candidates[1].health]
        return {"swarm": chosen[0], "swarms": chosen, "generation": self.generation, "cacheable": cacheable}

    def _unroutable(self, s: _Swarm) -> str:
        if s.health not in _HEALTH_RANK:
            return f"{s.health}: {s.reason}" if s.reason else s.health
        age = time.monotonic() - s.last_heartbeat
        if age > self.config.stale_after_s:
            return f"no heartbeat for {age:.1f} s"
        return ""

    def _candidates(self, capability: str, visited: list[str]) -> list[_Swarm]:
        found = [
            s
            for s in self.swarms.values()
            if s.name not in visited
            and capability_offered(s.capabilities, capability)
            and not self._unroutable(s)
        ]
        policy = self.config.conflict_policy
        if policy == "round_robin":  # a fixed order to rotate through
            key = lambda s: (_HEALTH_RANK[s.health], s.name)  # noqa: E731
        elif policy == "priority":
            key = lambda s: (_HEALTH_RANK[s.health], -s.priority, s.load(), s.name)  # noqa: E731
        else:
            key = lambda s: (_HEALTH_RANK[s.health], s.load(), -s.priority, s.name)  # noqa: E731
        return sorted(found, key=key)

    def capabilities(self) -> list[str]:
        """Every capability some registered swarm offers (a family as its `prefix.*`)."""
        return sorted({c for s in self.swarms.values() for c in s.capabilities})

    def swarm(self, name: str) -> dict[str, Any]:
        """One swarm's registry entry."""
        if name not in self.swarms:
            raise SwarmNotFoundError(name, list(self.swarms))
        return self._row(self.swarms[name])

    def table(self) -> list[dict[str, Any]]:
        """Every swarm's registry entry, by name."""
        return [self._row(s) for s in sorted(self.swarms.values(), key=lambda s: s.name)]

    def _row(self, s: _Swarm) -> dict[str, Any]:
        row = asdict(s)
        row["heartbeat_age_s"] = round(time.monotonic() - s.last_heartbeat, 2)
        row["routable"] = not self._unroutable(s)
        del row["last_heartbeat"]
        return row

    # -- system metadata and global key-value store -----------------------------------------

    def incarnation(self) -> float:
        """When this registry process started: it changes each time Ray restarts the actor."""
        return self.started_at

    def system_config(self) -> dict[str, Any]:
        """The configuration the system was brought up with."""
        return self.system

    def set_system_config(self, system: dict[str, Any]) -> None:
        """Replaces the stored system configuration (on `swarm up`)."""
        self.system = system

    def kv_get(self, key: str, default: Any = None) -> Any:
        """The value at `key`, or `default`."""
        return self.kv.get(key, (default, 0))[0]

    def kv_put(self, key: str, value: Any, expected_version: int | None = None) -> int | None:
        """Stores `value`; with `expected_version`, only if the key is still at that version
        (0 means absent). Returns the new version, or None when the check failed."""
        version = self.kv.get(key, (None, 0))[1]
        if expected_version is not None and expected_version != version:
            return None
        if key in SECRET_KEYS:
            self._secrets.put(key, value, version + 1)
        elif self.journal:
            self.journal.write_now({"k": "put", "key": key, "value": value, "version": version + 1})
        self.kv[key] = (value, version + 1)
        return version + 1

    def _put_entry(self, key: str) -> dict[str, Any]:
        value, version = self.kv[key]
        return {"k": "put", "key": key, "value": value, "version": version}

    def kv_version(self, key: str) -> int:
        """The key's version: 0 when absent, then 1, 2, ... per write."""
        return self.kv.get(key, (None, 0))[1]

    def kv_delete(self, key: str) -> bool:
        """Removes `key`; returns whether it was there."""
        if key not in self.kv:
            return False
        if key in SECRET_KEYS:
            self._secrets.delete(key)
        elif self.journal:
            self.journal.write_now({"k": "del", "key": key})
        del self.kv[key]
        return True

    def purge(self) -> None:
        """Deletes the registry's journal and its secrets (on `swarm down`)."""
        if self.journal:
            self.journal.purge()
        for key in SECRET_KEYS:
            self._secrets.delete(key)

    def kv_keys(self, prefix: str = "") -> list[str]:
        """Keys starting with `prefix`, sorted."""
        return sorted(k for k in self.kv if k.startswith(prefix))


class _Secrets:
    """Where the registry keeps the values of `SECRET_KEYS`: Ray's own key-value store (the
    GCS, held in memory), which outlives a restart of the registry actor, on any node, and is
    never written to swarmray's journals, disks or URIs. It goes with the Ray cluster, and the
    next `swarm up` provisions a new agents' key. In a process without Ray (tests), nowhere but
    the registry's memory."""

    def __init__(self):
        ns = ray.get_runtime_context().namespace if ray.is_initialized() else None
        self._prefix = f"swarmray/{ns}/secret/" if ns else None

    def read(self) -> dict[str, tuple[Any, int]]:
        """Every stored secret: key -> (value, version)."""
        if self._prefix is None:
            return {}
        found = {}
        for key in SECRET_KEYS:
            if (raw := internal_kv._internal_kv_get(self._prefix + key)) is not None:
                stored = json.loads(raw)
                found[key] = (stored["value"], stored["version"])
        return found

    def put(self, key: str, value: Any, version: int) -> None:
        if self._prefix is not None:
            internal_kv._internal_kv_put(self._prefix + key, json.dumps({"value": value, "version": version}))

    def delete(self, key: str) -> None:
        if self._prefix is not None:
            internal_kv._internal_kv_del(self._prefix + key)
