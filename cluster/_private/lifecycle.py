"""Bringing a system up on a Ray cluster and taking it down again."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import ray
from ray.experimental import internal_kv  # the GCS key-value store, as Ray's own tools use it

from actors._private.health import HealthMonitor
from actors._private.memory_store import MemoryStore
from actors._private.queen.queen import SwarmQueen
from actors._private.registry import MetaRegistry
from actors._private.services import AI_URL_KEY, FACTS_URL_KEY, MCP_URL_KEY, TRACING_KEY
from cluster._private.config import SystemConfig, config_changes, unset_secrets
from cluster._private.connection import LocalHead, call, existing, get, quiet_serve, registry_of
from cluster._private.status import status
from models._private.core import names
from models._private.core.errors import ConfigError, SystemConfigChangedError
from models._private.core.journal import journal_location
from serve import deploy_all, service_url
from serve._private.service import start_serve

__all__ = ["check_secrets", "down", "last_namespace", "mark_local_head", "up"]

LOCAL_HEAD_KEY = "_swarmray/started_local_head"
# In the cluster's own key-value store (the GCS): the namespace of the last `up`, which later
# commands without --namespace use, whoever runs them against this cluster.
_LAST_NAMESPACE_KEY = b"swarmray/last_namespace"

# Control actors hold no CPU so that they never keep agents from being placed; they restart
# forever, as OTP supervisors of the top of a tree do.
_CONTROL = dict(lifetime="detached", get_if_exists=True, num_cpus=0, max_restarts=-1)
_Registry = ray.remote(MetaRegistry)
_Queen = ray.remote(SwarmQueen)
_Monitor = ray.remote(HealthMonitor)
_Memory = ray.remote(MemoryStore)
MCP_READY_S = 60.0  # longest `up` waits for the federation's first listing of its upstreams
APP_DELETE_POLL_S = 0.1  # `down`: how often it looks whether the Serve applications are gone
APP_DELETE_TIMEOUT_S = 120.0  # … and how long at most (a facts replica's grace is 60 s)


def _keys(config: SystemConfig, ns: str, registry: Any) -> None:
    """Keys for the user and the agents when auth is on; a loud notice when it is off."""
    from cluster._private.credentials import provision

    services = [(name, c) for name, c in _services(config) if c is not None]
    if any(c.auth.enabled for _, c in services):
        provision(ns, next(c.auth for _, c in services if c.auth.enabled), registry)
    for name, c in services:
        if not c.auth.enabled:
            print(
                f"WARNING: auth is off for the {name} service: anyone who reaches "
                f"{c.host}:{c.port} can use it (allowed on loopback only)",
                file=sys.stderr,
            )


def _services(config: SystemConfig) -> list[tuple[str, Any]]:
    """(name, config or None) of each HTTP service a system may run on Serve."""
    mcp = config.mcp.server if config.mcp is not None else None
    return [("ai", config.ai), ("facts", config.facts), ("mcp", mcp)]


Progress = Callable[[str, int, int], None]
"""`up`'s progress: (what, done, of how many), called again as `done` grows."""


def check_secrets(config: SystemConfig) -> None:
    """Raises ConfigError naming each key the services read from the environment that is unset."""
    if unset := unset_secrets(config, dict(os.environ)):
        raise ConfigError("<config>", unset)


def up(config: SystemConfig, wait_s: float | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Creates the registry, queens and health monitors of `config`; idempotent.

    Actors that already exist under their names are kept. A namespace that runs a system of a
    different configuration is left as it is: `up` refuses with the difference (change a
    running system with `down` then `up`). Waits until every pool's first agents answer or their
    `ready_timeout_s` passes (at most `wait_s`), so a pool asking for resources the cluster
    lacks is reported as pending instead of hanging the call. `progress`, if given, hears how
    far the memory stores' loading, each service's replicas and the agents' start have come.

    Returns:
        The system status, as `status` reports it.

    Raises:
        SystemConfigChangedError: the namespace runs a system of another configuration.
        ConfigError: a key the services read from the environment is not set.
        ServiceExposedError: a service's auth is off and the Serve that runs listens beyond
            loopback (nothing is created then).
    """
    check_secrets(config)  # before anything is started
    for service, c in _services(config):
        if c is not None and not c.auth.enabled:
            quiet_serve()
            start_serve(c, service)  # where Serve really listens decides, before anything is created
    ns = config.namespace
    wanted = config.model_dump(mode="json", by_alias=True)
    if (running := existing(names.REGISTRY, ns)) is not None:
        stored = call(running.system_config.remote)
        if stored and (changes := config_changes(stored, wanted)):
            raise SystemConfigChangedError(ns, changes)
    control = (
        {**_CONTROL, "resources": dict(config.control_resources)} if config.control_resources else _CONTROL
    )
    journal = journal_location(config.registry.journal_uri, ns, "_registry")
    registry = _Registry.options(name=names.REGISTRY, namespace=ns, **control).remote(
        config.registry, wanted, journal
    )
    get(registry.set_system_config.remote(wanted))
    # Resolved here, with this driver's OTEL_EXPORTER_OTLP_ENDPOINT: the processes that trace
    # (queens, hosts, the services' replicas) have an environment of their own.
    trace = config.tracing.resolved()
    get(registry.kv_put.remote(TRACING_KEY, trace.model_dump(mode="json")))  # `Client` reads it
    _start_mcp_federation(config, control)  # before the queens: its swarm's agents call it
    queens, monitors = [], []
    for swarm in config.all_swarms():
        queens.append(
            _Queen.options(
                name=names.queen(swarm.name), namespace=ns, max_concurrency=100_000, **control
            ).remote(ns, swarm, config.registry, trace)
        )
        monitors.append(
            _Monitor.options(name=names.monitor(swarm.name), namespace=ns, **control).remote(ns, swarm)
        )
    memories = [
        _Memory.options(
            name=names.memory(name),
            namespace=ns,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_concurrency=1000,
            num_cpus=store.num_cpus,
            num_gpus=store.num_gpus or None,
            resources=dict(config.control_resources),
        ).remote(ns, name, store)
        for name, store in _memory_stores(config)
    ]
    mcp_server = config.mcp.server if config.mcp is not None else None
    if config.ai is not None or config.facts is not None or mcp_server is not None:
        # Every service's replicas start together, while the memory stores load in their actors.
        quiet_serve()
        ai_url = service_url(config.ai) if config.ai is not None else None
        services: dict[str, tuple[Any, str]] = {}  # registry key: (config, application)
        if config.ai is not None:
            services[AI_URL_KEY] = (_traced(config.ai), names.ai_app_name(ns))
        if config.facts is not None:
            facts = config.facts.with_ai(ai_url) if ai_url else config.facts
            services[FACTS_URL_KEY] = (_traced(facts), names.facts_app_name(ns))
        if mcp_server is not None:
            services[MCP_URL_KEY] = (_traced(mcp_server), names.mcp_app_name(ns))
        apps = [app for _, app in services.values()]
        urls = _watched(lambda: deploy_all(list(services.values()), system=ns), apps, progress)
        for key, url in zip(services, urls, strict=True):
            get(registry.kv_put.remote(key, url))
        _keys(config, ns, registry)
    _loaded(memories, progress or _silent)  # before agents use them
    get([q.start.remote() for q in queens])
    get([m.start.remote() for m in monitors])
    ready_s = max(p.ready_timeout_s for s in config.all_swarms() for p in s.pools.values())
    deadline = time.monotonic() + min(ready_s, wait_s if wait_s is not None else ready_s)
    while time.monotonic() < deadline:
        rows = [a for q in get([q.status.remote() for q in queens]) for a in q["agents"]]
        (progress or _silent)("agents started", sum(a["state"] != "pending" for a in rows), len(rows))
        if all(a["state"] != "pending" for a in rows):
            break
        time.sleep(0.2)
    get([m.check.remote() for m in monitors])  # report health as of now, not of start-up
    internal_kv._internal_kv_put(_LAST_NAMESPACE_KEY, ns.encode(), overwrite=True)
    return status(ns)


def _traced(service: Any) -> Any:
    """A service's config with its tracing resolved as the system's is (see `up`)."""
    return service.model_copy(update={"tracing": service.tracing.resolved()})


def _start_mcp_federation(config: SystemConfig, control: dict[str, Any]) -> None:
    """Creates the federation actor (kept when it exists), which starts an actor per stdio
    upstream, when `mcp.servers` names any; waits up to MCP_READY_S for its first listing. An
    upstream that does not answer by then is the federation's to retry, not a reason to fail
    `up`: its tools appear when it does."""
    if config.mcp is None or not config.mcp.servers:
        return
    from actors import start_federation

    federation = start_federation(
        dict(config.mcp.servers), config.mcp.federation, config.namespace, control.get("resources")
    )
    try:
        get(federation.ready.remote(), timeout_s=MCP_READY_S)
    except ray.exceptions.GetTimeoutError:
        print(
            f"WARNING: the MCP upstreams were not all listed within {MCP_READY_S:g} s; "
            "`swarm mcp servers` shows how they do",
            file=sys.stderr,
        )


def _stop_mcp_federation(namespace: str, config: dict[str, Any]) -> list[str]:
    """Ends the stdio upstreams' processes and kills their actors and the federation actor,
    those of the stored config's servers and any other the namespace holds. Their pins live in
    the registry's key-value store, which `down` purges with the registry."""
    stdio = names.mcp_stdio("")
    found = {
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == namespace and (a["name"] == names.MCP_FEDERATION or a["name"].startswith(stdio))
    }
    if not found:
        return []
    from actors import stop_federation

    servers = {*((config.get("mcp") or {}).get("servers") or {})}
    servers |= {n.removeprefix(stdio) for n in found if n.startswith(stdio)}
    stop_federation(sorted(servers), namespace)
    return sorted(found)


def _silent(what: str, done: int, total: int) -> None:
    pass


def _loaded(memories: list[Any], progress: Progress) -> None:
    """Waits for each memory store to have loaded its data (at most 300 s)."""
    waiting, deadline = [m.stats.remote() for m in memories], time.monotonic() + 300
    if memories:
        progress("memory stores loaded", 0, len(memories))
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not done:
            raise TimeoutError(f"{len(waiting)} memory stores did not load within 300 s")
        get(done)  # a store that failed to load raises here
        progress("memory stores loaded", len(memories) - len(waiting), len(memories))


def _watched(deploy: Callable[[], list[str]], apps: list[str], progress: Progress | None) -> list[str]:
    """`deploy()`, telling `progress` how many replicas of each application run meanwhile."""
    if progress is None:
        return deploy()
    from ray import serve

    with ThreadPoolExecutor(1) as pool:
        deploying = pool.submit(deploy)
        while True:
            try:
                urls = deploying.result(timeout=0.5)
            except FutureTimeout:
                urls = None
            try:
                running = serve.status().applications
            except Exception:  # the progress is a view: it never fails the deploy
                running = {}
            for app in apps:
                deployments = running[app].deployments.values() if app in running else []
                states = [d.replica_states for d in deployments]
                total = sum(sum(s.values()) for s in states)
                progress(f"replicas of {app}", sum(s.get("RUNNING", 0) for s in states), total)
            if urls is not None:
                return urls


def last_namespace() -> str | None:
    """The namespace the last `up` on this cluster brought up, if it has not been taken down."""
    value = internal_kv._internal_kv_get(_LAST_NAMESPACE_KEY)
    return value.decode() if value else None


def _memory_stores(config: SystemConfig) -> list[tuple[str, Any]]:
    """(name, MemoryStoreConfig) of every memory store the config asks for."""
    stores = [(s.name, s.memory) for s in config.swarms.values() if s.memory is not None]
    if config.global_memory is not None:
        stores.append(("global", config.global_memory))
    return stores


def mark_local_head(namespace: str) -> None:
    """Records which head `up` started (its Ray session, unique to that start), so that `down`
    stops that head and no other: not one the user started, nor one started after a reboot."""
    registry = registry_of(namespace)
    head = {
        "session": ray.get_runtime_context().get_session_name(),
        "address": ray.get_runtime_context().gcs_address,
    }
    call(lambda: registry.kv_put.remote(LOCAL_HEAD_KEY, head))


def down(namespace: str = "swarmray") -> list[str]:
    """Removes every actor of the system in `namespace`, and a local head `up` started.

    Every queen, monitor and memory store of the namespace goes, those of swarms its stored
    config no longer names too.

    Returns:
        The names of what was removed; of a local head, also each of its processes left running
        (another user's, or one this process may not signal).
    """
    registry = registry_of(namespace)
    config = call(registry.system_config.remote)
    if last_namespace() == namespace:
        internal_kv._internal_kv_del(_LAST_NAMESPACE_KEY)
    found = [
        owned
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == namespace and (owned := names.owner(a["name"]))
    ]
    swarms = list(dict.fromkeys([*config.get("swarms", {}), *(n for k, n in found if k != "memory")]))
    stores = list(dict.fromkeys([*swarms, "global", *(n for k, n in found if k == "memory")]))
    started = call(lambda: registry.kv_get.remote(LOCAL_HEAD_KEY, None))
    session = ray.get_runtime_context().get_session_name()
    ours = isinstance(started, dict) and started.get("session") == session
    removed = []
    for swarm in swarms:
        for name in (names.monitor(swarm), names.queen(swarm)):
            if (handle := existing(name, namespace)) is None:
                continue
            if name.startswith("queen:"):
                try:
                    call(lambda h=handle: h.stop.remote(purge=True), timeout_s=30, retry_s=30)
                except Exception:  # a dead queen takes its agents with it anyway
                    pass
            ray.kill(handle, no_restart=True)
            removed.append(name)
    for name in stores:
        if (store := existing(names.memory(name), namespace)) is None:
            continue
        ray.kill(store, no_restart=True)  # its data stays on disk: memory outlives `down`
        removed.append(names.memory(name))
    removed += _stop_mcp_federation(namespace, config)  # after the queens: no agent calls it now
    services = (("ai", names.ai_app_name), ("facts", names.facts_app_name))
    apps = [app(namespace) for key, app in services if config.get(key)]
    if (config.get("mcp") or {}).get("server"):
        apps.append(names.mcp_app_name(namespace))
    if apps:
        from ray import serve

        quiet_serve()
        # All at once: each waits out its replicas' graceful shutdown (a facts shard finishing
        # its step), which one after another added up (18 s for three). Their data stays on disk.
        for app in apps:
            serve.delete(app, _blocking=False)
        deadline = time.monotonic() + APP_DELETE_TIMEOUT_S
        while left := set(apps) & set(serve.status().applications):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Serve did not delete {sorted(left)} within {APP_DELETE_TIMEOUT_S:g} s; "
                    "`swarm down` again once it has (see `serve status`)"
                )
            time.sleep(APP_DELETE_POLL_S)
        removed += [f"Serve application {app}" for app in apps]
    if apps and (authority := existing(names.authority_name(namespace), namespace)) is not None:
        ray.kill(authority, no_restart=True)  # keys stay in its journal, for the next `up`
        removed.append(names.authority_name(namespace))
    call(lambda: registry.purge.remote(), retry_s=30)
    ray.kill(registry, no_restart=True)
    removed.append(names.REGISTRY)
    if ours:
        stopped = LocalHead(session, started["address"]).stop()
        left = f" (left running: {'; '.join(stopped.skipped)})" if stopped.skipped else ""
        removed.append(f"local Ray head{left}")
    return removed
