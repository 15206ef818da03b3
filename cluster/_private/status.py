"""What a running system reports: its swarms, agents, memories and AI service."""

from __future__ import annotations

from typing import Any

import httpx

from actors._private.services import AI_URL_KEY, FACTS_URL_KEY, MCP_URL_KEY, SERVICE_KEY_KEY
from cluster._private.connection import call, existing, registry_of
from cluster._private.credentials import user_key
from cluster._private.endpoints import check_key_transport, url_here
from models._private.core import names
from models._private.core.errors import ServiceURLError
from models._private.core.names import bearer

__all__ = ["status"]


def _facts_status(url: str | None, namespace: str, key: str | None) -> dict[str, Any]:
    """The facts service's URL and what each of its namespaces holds (asked over HTTP, at the
    URL this process reaches it at, never with the key where it must not go)."""
    out: dict[str, Any] = {"url": url, "app": names.facts_app_name(namespace), "namespaces": []}
    try:
        here = url_here(url or "")
        check_key_transport(here, key)
    except ServiceURLError as e:
        out["error"] = f"not asked: {e}"
        return out
    try:
        answer = httpx.get(f"{here}/namespaces", timeout=10, headers=bearer(key))
        answer.raise_for_status()
        out["namespaces"] = answer.json()["data"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
        out["error"] = f"not answering: {e!r}"
    return out


def status(namespace: str = "swarmray") -> dict[str, Any]:
    """Swarms with health and queue depths, and every agent's state; `missing` lists swarms of
    the system whose queen or monitor is not running.

    Raises:
        SystemNotFoundError: nothing runs in `namespace`.
    """
    registry = registry_of(namespace)
    table = {row["name"]: row for row in call(registry.table.remote)}
    config = call(registry.system_config.remote)
    swarms, missing = [], []
    mcp = config.get("mcp") or {}
    generated = [mcp["federation"]["swarm"]] if mcp.get("servers") else []  # runs federated tools
    for name in sorted([*config.get("swarms", {}), *generated]):
        queen = existing(names.queen(name), namespace)
        monitor = existing(names.monitor(name), namespace)
        if queen is None or monitor is None:
            actor = names.queen(name) if queen is None else names.monitor(name)
            missing.append({"swarm": name, "reason": f"{actor} is not running; `swarm up` starts it again"})
            continue
        q, m = call(lambda q=queen, m=monitor: [q.status.remote(), m.report.remote()])
        swarms.append({**q, "registry": table.get(name, {}), "health": m})
    memories = []
    for name in [*sorted(config.get("swarms", {})), "global"]:
        if (store := existing(names.memory(name), namespace)) is not None:
            memories.append(call(store.stats.remote))
    ai = None
    if config.get("ai") is not None:
        ai = {
            "url": call(lambda: registry.kv_get.remote(AI_URL_KEY)),
            "app": names.ai_app_name(namespace),
            "models": {n: m["source"] for n, m in config["ai"]["models"].items()},
        }
    facts = None
    if config.get("facts") is not None:
        # The user's key, else the agents' (status also runs where no user file is).
        key = user_key(namespace) or call(lambda: registry.kv_get.remote(SERVICE_KEY_KEY))
        facts = _facts_status(call(lambda: registry.kv_get.remote(FACTS_URL_KEY)), namespace, key)
    mcp_status = None
    if mcp.get("server") is not None:
        mcp_status = {
            "url": call(lambda: registry.kv_get.remote(MCP_URL_KEY)),
            "app": names.mcp_app_name(namespace),
            "servers": sorted(mcp.get("servers") or {}),
        }
    return {
        "namespace": namespace,
        "swarms": swarms,
        "missing": missing,
        "memory": memories,
        "ai": ai,
        "facts": facts,
        "mcp": mcp_status,
    }
