"""The federation of remote MCP servers, in plain Python (the `McpFederation` actor wraps it):
each upstream's tools cached as its list's `ttlMs` says (refreshed on list changes), named as
capabilities, pinned by a hash of their definitions (a changed tool is held back until
approved), and called through a router: power of two choices by in-flight calls and latency
among the group's healthy upstreams, a circuit breaker and a deadline per upstream, a fallback
only for tools a trusted upstream marks read-only or idempotent, and one answer per request id.
Resources, prompts and completions are passed through under the upstreams' prefixes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import re
import statistics
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from actors._private.mcp.config import McpServerConfig
from actors._private.mcp.upstream import ToolListing, Upstream, UpstreamDown
from models._private.core.breaker import OPEN, CircuitBreaker
from models._private.core.errors import (
    McpDeadlineError,
    McpError,
    McpPinMismatchError,
    McpToolHeldError,
    McpUnknownToolError,
    McpUpstreamError,
)
from models._private.core.uris import redact_uri

__all__ = [
    "APPROVED",
    "CHANGED",
    "COLLISION",
    "PENDING",
    "DictPins",
    "Federation",
    "PinStore",
    "definition_hash",
    "sanitize",
]

log = logging.getLogger(__name__)

APPROVED, PENDING, CHANGED, COLLISION = "approved", "pending", "changed", "collision"
PINNED_FIELDS = ("name", "description", "inputSchema", "outputSchema", "annotations")
EWMA_ALPHA = 0.2  # weight of the newest latency in an upstream's average
LATENCY_WINDOW = 256  # latencies kept per upstream for its p50
MEMO_SIZE = 10_000  # request ids remembered (with their answers)
MEMO_TTL_S = 600.0  # how long a request id's answer is remembered
LIST_TIMEOUT_S = 30.0  # a tools/list that takes longer counts as failed


def sanitize(tool: str) -> str:
    """A tool name as the last part of a capability: lowercase, every char outside [a-z0-9_] a '_'."""
    return re.sub(r"[^a-z0-9_]", "_", tool.lower())


def definition_hash(tool: dict[str, Any]) -> str:
    """The SHA-256 of what a tool's caller trusts: its name, description, input and output
    schemas and annotations (canonical JSON), hex."""
    pinned = {k: tool.get(k) for k in PINNED_FIELDS}
    return hashlib.sha256(json.dumps(pinned, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class PinStore(Protocol):
    """Where approved definition hashes are kept ('<server>/<tool>' -> hash)."""

    async def load(self) -> dict[str, str]: ...
    async def save(self, pins: dict[str, str]) -> None: ...


class DictPins:
    """Pins in a dict (tests, a federation without a registry)."""

    def __init__(self, data: dict[str, str] | None = None):
        self.data = data if data is not None else {}

    async def load(self) -> dict[str, str]:
        return dict(self.data)

    async def save(self, pins: dict[str, str]) -> None:
        self.data.clear()
        self.data.update(pins)


@dataclass
class _Tool:
    server: str
    name: str
    capability: str
    definition: dict[str, Any]
    hash: str
    state: str = PENDING


@dataclass
class _Member:
    """One upstream as the federation sees it: its tools, breaker and load."""

    name: str
    config: McpServerConfig
    upstream: Upstream
    breaker: CircuitBreaker
    group: str
    prefix: str
    tools: dict[str, _Tool] = field(default_factory=dict)
    listed_at: float | None = None
    ttl_s: float = 0.0
    cache_scope: str | None = None
    refreshing: asyncio.Task | None = None
    in_flight: int = 0
    ewma_ms: float = 0.0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    calls: int = 0
    failures: int = 0
    last_error: str | None = None

    @property
    def healthy(self) -> bool:
        connected = self.upstream.status().get("connected", True)
        return connected and self.breaker.state != OPEN


class _Failed(Exception):
    """One attempt on one upstream failed (internal)."""

    def __init__(self, reason: str, sent: bool, timed_out: bool = False):
        super().__init__(reason)
        self.reason, self.sent, self.timed_out = reason, sent, timed_out


class Federation:
    """The federation's logic over `Upstream` objects (see the module docstring).

    Args:
        servers: each upstream's config, by name.
        upstreams: each upstream's client, by the same names.
        pins: where pins are kept.
        swarm: the swarm that runs federated calls (named in catalog entries).
        list_ttl_s: how long a tools list is used when its upstream gives no ttlMs.
    """

    def __init__(
        self,
        servers: dict[str, McpServerConfig],
        upstreams: dict[str, Upstream],
        pins: PinStore,
        swarm: str = "mcp",
        list_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if set(servers) != set(upstreams):
            raise ValueError(f"servers {sorted(servers)} and upstreams {sorted(upstreams)} differ")
        self.swarm = swarm
        self.list_ttl_s = list_ttl_s
        self.clock = clock
        self._pins_store = pins
        self.pins: dict[str, str] = {}
        self.members = {
            name: _Member(
                name=name,
                config=cfg,
                upstream=upstreams[name],
                breaker=CircuitBreaker(cfg.breaker, clock),
                group=cfg.group_of(name),
                prefix=cfg.prefix_of(name),
            )
            for name, cfg in servers.items()
        }
        self._by_capability: dict[str, list[_Tool]] = {}
        self._memo: OrderedDict[str, tuple[float, asyncio.Future]] = OrderedDict()
        self._resources: dict[str, str] = {}  # uri -> server
        self._prompts: dict[str, tuple[str, str]] = {}  # prefixed name -> (server, name)
        self.duplicates = 0  # calls answered from the memo
        self._background: set[asyncio.Task] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def poll(self) -> None:
        """Asks upstreams that report their status from elsewhere (a stdio actor) for it."""
        await asyncio.gather(
            *(m.upstream.poll() for m in self.members.values() if hasattr(m.upstream, "poll")),
            return_exceptions=True,
        )

    async def start(self, wait_s: float = 10.0) -> None:
        """Loads the pins, connects every upstream and lists its tools (an upstream that does not
        answer within `wait_s` is listed when it does: at its reconnection or the next call)."""
        self.pins = await self._pins_store.load()
        for m in self.members.values():
            m.upstream.on_list_changed(self._changed_callback(m.name))
        await asyncio.gather(*(m.upstream.start() for m in self.members.values()))
        await asyncio.gather(
            *(self._refresh_quietly(m, wait_s) for m in self.members.values()), return_exceptions=True
        )

    async def close(self) -> None:
        """Closes every upstream: a stdio process ends, an HTTP connection closes."""
        await asyncio.gather(*(m.upstream.close() for m in self.members.values()), return_exceptions=True)

    def _changed_callback(self, name: str):
        async def changed() -> None:
            await self.refresh(name)

        return changed

    # -- the tools cache and pins ---------------------------------------------------------------

    async def refresh(self, server: str | None = None) -> list[str]:
        """Lists the tools of `server` (or of every upstream) now; returns the servers listed."""
        members = [self._member(server)] if server else list(self.members.values())
        await asyncio.gather(*(self._refresh(m) for m in members))
        return [m.name for m in members]

    async def _refresh_quietly(self, m: _Member, timeout_s: float = LIST_TIMEOUT_S) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._refresh(m)), timeout_s)
        except Exception as e:  # the upstream's failure is recorded, not raised
            m.last_error = f"tools/list: {_reason(e)}"

    async def _refresh(self, m: _Member) -> None:
        # One listing at a time per upstream: a second asker waits for the first.
        if m.refreshing is None or m.refreshing.done():
            m.refreshing = asyncio.ensure_future(self._list(m))
        await asyncio.shield(m.refreshing)

    async def _list(self, m: _Member) -> None:
        listing: ToolListing = await m.upstream.list_tools(timeout_s=LIST_TIMEOUT_S)
        tools: dict[str, _Tool] = {}
        taken: set[str] = set()
        for definition in listing.tools:
            name = definition["name"]
            capability = f"{m.prefix}.{sanitize(name)}"
            tool = _Tool(m.name, name, capability, definition, definition_hash(definition))
            if capability in taken:
                tool.state = COLLISION
            else:
                taken.add(capability)
            tools[name] = tool
        m.tools = tools
        m.listed_at = self.clock()
        m.ttl_s = listing.ttl_ms / 1000 if listing.ttl_ms else self.list_ttl_s
        m.cache_scope = listing.cache_scope
        await self._apply_pins(m)
        self._index()

    async def _apply_pins(self, m: _Member) -> None:
        added = False
        for tool in m.tools.values():
            if tool.state == COLLISION:
                continue
            pinned = self.pins.get(f"{m.name}/{tool.name}")
            group_pin = self._group_pin(m, tool.name)
            if pinned is None and group_pin not in (None, tool.hash):
                # Another member of the group had another definition approved: this one is held,
                # or a fallback to it would serve a definition nobody approved.
                tool.state = CHANGED
                log.warning(
                    "MCP tool %s of %s differs from its group's approved definition: held back",
                    tool.name,
                    m.name,
                )
                continue
            if pinned is None and m.config.approve == "first_use":
                self.pins[f"{m.name}/{tool.name}"] = pinned = tool.hash
                added = True
            if pinned is None:
                tool.state = PENDING
            else:
                tool.state = APPROVED if pinned == tool.hash else CHANGED
                if tool.state == CHANGED:
                    log.warning("MCP tool %s of %s changed its definition: held back", tool.name, m.name)
        if added:
            await self._pins_store.save(dict(self.pins))

    def _group_pin(self, m: _Member, tool: str) -> str | None:
        """The hash another member of `m`'s group has pinned for `tool`, if any."""
        for other in self.members.values():
            if other is not m and other.group == m.group:
                pinned = self.pins.get(f"{other.name}/{tool}")
                if pinned is not None:
                    return pinned
        return None

    def _index(self) -> None:
        index: dict[str, list[_Tool]] = {}
        for m in self.members.values():
            for tool in m.tools.values():
                if tool.state != COLLISION:
                    index.setdefault(tool.capability, []).append(tool)
        self._by_capability = index

    async def _fresh(self) -> None:
        """Lists upstreams never listed (waiting) and relists expired ones (in the background:
        a call does not wait for a listing it can do without)."""
        now = self.clock()
        never = [m for m in self.members.values() if m.listed_at is None]
        if never:
            await asyncio.gather(*(self._refresh_quietly(m) for m in never))
        for m in self.members.values():
            expired = m.listed_at is not None and now - m.listed_at >= m.ttl_s
            if expired and (m.refreshing is None or m.refreshing.done()):
                m.listed_at = now  # one background relist per expiry
                self._background.add(task := asyncio.ensure_future(self._refresh_quietly(m)))
                task.add_done_callback(self._background.discard)

    async def approve(
        self, server_or_group: str, tool: str | None = None, hash: str | None = None
    ) -> list[str]:
        """Pins the current definitions of a server's (or a group's) pending and changed tools,
        or of one tool (by its name or capability); returns the capabilities approved.

        Args:
            hash: The definition hash the operator reviewed (`swarm mcp tools` shows it): when
                given, nothing is pinned unless every definition to pin has it
                (McpPinMismatchError otherwise), so a definition changed since is never approved.
        """
        members = [m for m in self.members.values() if server_or_group in (m.name, m.group)]
        if not members:
            raise McpUnknownToolError(server_or_group, f"no MCP server or group {server_or_group!r}")
        chosen = [
            (m, t)
            for m in members
            for t in m.tools.values()
            if t.state != COLLISION
            and (tool is None or tool in (t.name, t.capability))
            and (tool is not None or t.state != APPROVED)
        ]
        if tool is not None and not chosen:
            raise McpUnknownToolError(tool, f"{server_or_group!r} lists no tool {tool!r}")
        for m, t in chosen:
            if hash is not None and t.hash != hash:
                raise McpPinMismatchError(t.capability, m.name, hash, t.hash)
        approved = []
        for m, t in chosen:
            self.pins[f"{m.name}/{t.name}"] = t.hash
            t.state = APPROVED
            approved.append(t.capability)
        await self._pins_store.save(dict(self.pins))
        self._index()
        return sorted(set(approved))

    # -- views ----------------------------------------------------------------------------------

    async def catalog(self, family: str | None = None) -> list[dict[str, Any]]:
        """Approved tools as catalog entries (of one family 'prefix.*' when given)."""
        await self._fresh()
        root = family[:-1] if family and family.endswith("*") else None
        entries = []
        for capability, tools in sorted(self._by_capability.items()):
            if root is not None and not capability.startswith(root):
                continue
            approved = [t for t in tools if t.state == APPROVED]
            if not approved:
                continue
            d = approved[0].definition
            entries.append(
                {
                    "capability": capability,
                    "swarm": self.swarm,
                    "description": d.get("description") or d.get("title") or d["name"],
                    "pools": [],
                    "payload_schema": d.get("inputSchema") or {"type": "object"},
                    "output_schema": d.get("outputSchema"),
                    "annotations": d.get("annotations"),
                    "server": approved[0].server,
                    "tool": approved[0].name,
                }
            )
        return entries

    def tools(self) -> list[dict[str, Any]]:
        """Every upstream tool with its state and hashes."""
        return [
            {
                "server": m.name,
                "group": m.group,
                "tool": t.name,
                "capability": t.capability,
                "state": t.state,
                "pinned_hash": self.pins.get(f"{m.name}/{t.name}"),
                "current_hash": t.hash,
                "description": t.definition.get("description"),
            }
            for m in self.members.values()
            for t in m.tools.values()
        ]

    def servers(self) -> list[dict[str, Any]]:
        """Each upstream: its transport, group, health, breaker, load and latency."""
        out = []
        for m in self.members.values():
            status = m.upstream.status()
            out.append(
                {
                    "name": m.name,
                    "kind": m.config.kind,
                    "group": m.group,
                    "prefix": m.prefix,
                    "url": redact_uri(str(m.config.url)) if m.config.url else None,
                    "command": m.config.command,
                    "trusted": m.config.trusted,
                    "healthy": m.healthy,
                    "connected": status.get("connected", True),
                    "restarts": status.get("restarts", 0),
                    "breaker": m.breaker.state,
                    "in_flight": m.in_flight,
                    "calls": m.calls,
                    "failures": m.failures,
                    "p50_ms": round(statistics.median(m.latencies_ms), 3) if m.latencies_ms else None,
                    "ewma_ms": round(m.ewma_ms, 3),
                    "last_error": m.last_error or status.get("last_error"),
                    "tools": len(m.tools),
                    "cache_scope": m.cache_scope,
                    "ttl_s": m.ttl_s,
                }
            )
        return out

    # -- calls ----------------------------------------------------------------------------------

    async def call(
        self,
        capability: str,
        arguments: dict[str, Any] | None = None,
        deadline_s: float | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Calls the tool that is `capability` on one upstream of its group; returns the
        CallToolResult JSON. A `request_id` seen in the last 10 minutes gets the first call's
        answer (or waits for it), without calling again."""
        if request_id is None:
            return await self._call(capability, arguments or {}, deadline_s)
        now = self.clock()
        seen = self._memo.get(request_id)
        if seen is not None and now - seen[0] < MEMO_TTL_S:
            self.duplicates += 1
            return await asyncio.shield(seen[1])
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._memo[request_id] = (now, future)
        self._memo.move_to_end(request_id)
        while len(self._memo) > MEMO_SIZE:
            self._memo.popitem(last=False)
        try:
            result = await self._call(capability, arguments or {}, deadline_s)
        except BaseException as e:
            if isinstance(e, McpError) and getattr(e, "sent", False):
                # The tool may have run: the same request never runs it again, it gets this error.
                future.set_exception(e)
                future.exception()  # retrieved: no "never retrieved" warning when nobody asks again
            else:
                # Nothing ran: a later attempt of the same request may call, and the duplicates
                # already waiting get this error (a cancellation would read as a generic failure).
                if self._memo.get(request_id, (0, None))[1] is future:
                    del self._memo[request_id]
                if isinstance(e, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(e)
                    future.exception()
            raise
        future.set_result(result)
        return result

    async def _call(
        self, capability: str, arguments: dict[str, Any], deadline_s: float | None
    ) -> dict[str, Any]:
        tools = self._by_capability.get(capability)
        if tools is None:
            await self._fresh()
            tools = self._by_capability.get(capability)
            if tools is None:
                raise McpUnknownToolError(capability)
        else:
            await self._fresh()
        approved = [t for t in tools if t.state == APPROVED]
        if not approved:
            held = tools[0]
            pinned = self.pins.get(f"{held.server}/{held.name}")
            raise McpToolHeldError(capability, held.server, pinned, held.hash)
        retry_ok = any(self._retryable(t) for t in approved)
        # Without a deadline of its own, a call may take as long as its slowest upstream may.
        budget_s = deadline_s or max(self.members[t.server].config.timeout_s for t in approved)
        deadline = self.clock() + budget_s
        failures: list[tuple[str, str]] = []
        tried: set[str] = set()
        sent = timed_out = False
        while True:
            candidates = [t for t in approved if t.server not in tried]
            open_ = [t.server for t in candidates if self.members[t.server].breaker.state == OPEN]
            candidates = [t for t in candidates if t.server not in open_]
            if not candidates:
                failures += [(s, "breaker open") for s in open_]
                break
            # A disconnected upstream is tried only when no connected one is left.
            connected = [
                t for t in candidates if self.members[t.server].upstream.status().get("connected", True)
            ]
            tool = self._choose(connected or candidates)
            m = self.members[tool.server]
            tried.add(m.name)
            if not m.breaker.allow():  # half-open, its one probe already out
                failures.append((m.name, "breaker open (probing)"))
                continue
            remaining = deadline - self.clock()
            if remaining <= 0:
                m.breaker.abandon()
                timed_out = True
                break
            try:
                return await self._attempt(m, tool, arguments, min(remaining, m.config.timeout_s))
            except _Failed as f:
                failures.append((m.name, f.reason))
                sent = sent or f.sent
                timed_out = f.timed_out
                if not retry_ok:
                    break
        if timed_out and failures:
            err: McpError = McpDeadlineError(capability, failures[-1][0], budget_s)
        else:
            err = McpUpstreamError(capability, failures)
        # Remembered for the request id only when the tool may have run and may not run again.
        err.sent = sent and not retry_ok  # type: ignore[attr-defined]
        raise err

    def _retryable(self, tool: _Tool) -> bool:
        if not self.members[tool.server].config.trusted:
            return False
        hints = tool.definition.get("annotations") or {}
        return bool(hints.get("readOnlyHint") or hints.get("idempotentHint"))

    def _choose(self, candidates: list[_Tool]) -> _Tool:
        """Power of two choices: of two random candidates, the one with fewer calls in flight
        (then the lower average latency)."""
        if len(candidates) == 1:
            return candidates[0]
        a, b = random.sample(candidates, 2)
        ma, mb = self.members[a.server], self.members[b.server]
        return a if (ma.in_flight, ma.ewma_ms) <= (mb.in_flight, mb.ewma_ms) else b

    async def _attempt(self, m: _Member, tool: _Tool, arguments: dict[str, Any], timeout_s: float) -> dict:
        m.in_flight += 1
        m.calls += 1
        started = self.clock()
        try:
            result = await m.upstream.call_tool(tool.name, arguments, timeout_s)
            _check_result(result)
        except asyncio.CancelledError:
            m.breaker.abandon()
            raise
        except (asyncio.TimeoutError, TimeoutError):
            self._failed(m, f"no answer within {timeout_s:.3g} s", started)
            raise _Failed(m.last_error, sent=True, timed_out=True) from None
        except UpstreamDown as e:
            self._failed(m, str(e), started)
            raise _Failed(m.last_error, sent=e.sent) from None
        except Exception as e:  # a malformed reply, a protocol error: the upstream failed
            self._failed(m, _reason(e), started)
            raise _Failed(m.last_error, sent=True) from None
        finally:
            m.in_flight -= 1
        m.breaker.success(since=started)
        ms = (self.clock() - started) * 1000
        m.latencies_ms.append(ms)
        m.ewma_ms = ms if m.ewma_ms == 0 else EWMA_ALPHA * ms + (1 - EWMA_ALPHA) * m.ewma_ms
        return result

    def _failed(self, m: _Member, reason: str, started: float) -> None:
        m.breaker.failure()
        # A failure weighs as a slow call, so that the router prefers the upstreams that answer.
        ms = (self.clock() - started) * 1000
        m.ewma_ms = max(m.ewma_ms, ms, 1.0)
        m.failures += 1
        m.last_error = reason

    # -- pass-throughs --------------------------------------------------------------------------

    def _member(self, server: str) -> _Member:
        try:
            return self.members[server]
        except KeyError:
            raise McpUnknownToolError(server, f"no MCP server {server!r}") from None

    def _groups(self) -> dict[str, list[_Member]]:
        groups: dict[str, list[_Member]] = {}
        for m in self.members.values():
            groups.setdefault(m.group, []).append(m)
        return groups

    async def _first(self, members: list[_Member], ask: Callable[[_Member], Any]) -> Any:
        """The answer of the first member of a group that gives one (reads may go anywhere)."""
        last: BaseException | None = None
        for m in sorted(members, key=lambda m: not m.healthy):
            try:
                return await ask(m)
            except Exception as e:  # the next member of the group may answer
                last = e
                m.last_error = _reason(e)
        raise McpUpstreamError(members[0].group, [(m.name, m.last_error or "") for m in members]) from last

    async def list_resources(self) -> dict[str, Any]:
        """Every group's resources, names prefixed ('<prefix>.<name>'), URIs as they are."""
        out: list[dict[str, Any]] = []
        for members in self._groups().values():
            with contextlib.suppress(McpUpstreamError):
                listed = await self._first(members, lambda m: m.upstream.list_resources())
                server = members[0]
                for r in listed.get("resources", []):
                    self._resources[r["uri"]] = next((m.name for m in members if m.healthy), server.name)
                    out.append({**r, "name": f"{server.prefix}.{r['name']}"})
        return {"resources": out}

    async def read_resource(self, uri: str) -> dict[str, Any]:
        """Reads a resource a `list_resources` listed (listing first when it has not)."""
        group = await self._resource_group(uri)
        return await self._first(group, lambda m: m.upstream.read_resource(uri))

    async def _resource_group(self, uri: str) -> list[_Member]:
        """The members of the group that lists the resource `uri` (listing first when none has)."""
        if uri not in self._resources:
            await self.list_resources()
        server = self._resources.get(uri)
        if server is None:
            raise McpUnknownToolError(uri, "no federated MCP server lists this resource")
        return [m for m in self.members.values() if m.group == self.members[server].group]

    async def list_prompts(self) -> dict[str, Any]:
        """Every group's prompts, names prefixed ('<prefix>.<sanitized name>')."""
        out: list[dict[str, Any]] = []
        for members in self._groups().values():
            with contextlib.suppress(McpUpstreamError):
                listed = await self._first(members, lambda m: m.upstream.list_prompts())
                prefix = members[0].prefix
                for p in listed.get("prompts", []):
                    name = f"{prefix}.{sanitize(p['name'])}"
                    self._prompts[name] = (members[0].name, p["name"])
                    out.append({**p, "name": name})
        return {"prompts": out}

    async def _prompt(self, name: str) -> tuple[list[_Member], str]:
        if name not in self._prompts:
            await self.list_prompts()
        if name not in self._prompts:
            raise McpUnknownToolError(name, "no federated MCP server lists this prompt")
        server, original = self._prompts[name]
        return [m for m in self.members.values() if m.group == self.members[server].group], original

    async def get_prompt(self, name: str, arguments: dict[str, str] | None = None) -> dict[str, Any]:
        """Gets a prompt by its prefixed name."""
        group, original = await self._prompt(name)
        return await self._first(group, lambda m: m.upstream.get_prompt(original, arguments))

    async def complete(
        self, ref: dict[str, Any], argument: dict[str, str], context_arguments: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Completes a prompt's (by its prefixed name) or a resource template's argument."""
        if ref.get("type") == "ref/prompt":
            group, original = await self._prompt(ref["name"])
            ref = {**ref, "name": original}
        else:
            group = await self._resource_group(ref.get("uri", ""))
        return await self._first(group, lambda m: m.upstream.complete(ref, argument, context_arguments))


def _check_result(result: Any) -> None:
    """A reply a tools/call may give: a dict with a list of content blocks."""
    if not isinstance(result, dict) or not isinstance(result.get("content"), list):
        raise ValueError(f"malformed tools/call result: {str(result)[:200]}")
    if not isinstance(result.get("isError", False), bool):
        raise ValueError(f"malformed tools/call result: isError is {result.get('isError')!r}")


def _reason(e: BaseException) -> str:
    while len(getattr(e, "exceptions", ())) == 1:  # an exception group of one
        e = e.exceptions[0]
    return f"{type(e).__name__}: {e}"[:500]
