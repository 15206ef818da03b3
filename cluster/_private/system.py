"""Bringing a system up and down on a Ray cluster, and the client that talks to it."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import tenacity
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from actors._private import names
from actors._private.health import HealthMonitor
from actors._private.journal import default_journal_uri
from actors._private.memory_store import MemoryStore
from actors._private.queen import SwarmQueen
from actors._private.registry import MetaRegistry
from actors._private.task import Task, TaskResult
from cluster._private import env
from cluster._private.config import SystemConfig
from cluster._private.errors import (
    SchedulingError,
    SwarmNotFoundError,
    SwarmrayError,
    SystemNotFoundError,
    TaskCancelledError,
    TaskFailedError,
    TaskTimeoutError,
)

__all__ = ["Client", "connect", "down", "status", "up"]

log = logging.getLogger(__name__)

LOCAL_HEAD_KEY = "_swarmray/started_local_head"

# Control actors hold no CPU so that they never keep agents from being placed; they restart
# forever, as OTP supervisors of the top of a tree do.
_CONTROL = dict(lifetime="detached", get_if_exists=True, num_cpus=0, max_restarts=-1)
_TRANSIENT = (RayActorError, ActorUnavailableError)  # the actor is restarting, or its node left
_Registry = ray.remote(MetaRegistry)
_Queen = ray.remote(SwarmQueen)
_Monitor = ray.remote(HealthMonitor)
_Memory = ray.remote(MemoryStore)


def connect(address: str | None = None, namespace: str = "swarmray") -> None:
    """Connects this process to Ray in `namespace`.

    Args:
        address: 'auto', 'ray://host:10001', 'host:6379', or None to start a private local Ray
            for this process (SWARMRAY_ADDRESS / RAY_ADDRESS are used when set).
        namespace: The Ray namespace of the system.
    """
    if ray.is_initialized():
        return
    ray.init(
        address=address or env.ray_address(),
        namespace=namespace,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )


def _get(refs: Any, timeout_s: float | None = None) -> Any:
    # Re-raise swarmray errors from actors as themselves, not wrapped in Ray's traceback text.
    try:
        return ray.get(refs, timeout=timeout_s)
    except RayTaskError as e:
        if isinstance(e.cause, SwarmrayError):
            raise e.cause from None
        raise


def _call(
    make_ref: Callable[[], Any],
    timeout_s: float | None = None,
    retry_s: float = 60.0,
    on_retry: Callable[[], None] | None = None,
) -> Any:
    """`_get(make_ref())`, re-issued with exponential backoff (tenacity) while the actor is
    restarting or its node is gone, for up to `retry_s`."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(_TRANSIENT),
        wait=tenacity.wait_exponential(multiplier=0.05, max=2.0),
        stop=tenacity.stop_after_delay(retry_s),
        before_sleep=(lambda _: on_retry()) if on_retry else None,
        reraise=True,
    )
    return retrying(lambda: _get(make_ref(), timeout_s))


def connect_or_start(address: str | None, namespace: str) -> bool:
    """Connects to `address`, else to a running local Ray, else starts a local head.

    Returns:
        Whether a local head was started.
    """
    address = address or env.ray_address()
    if address:
        connect(address, namespace)
        return False
    try:
        connect("auto", namespace)
        return False
    except ConnectionError:
        start_local_head()
        connect("auto", namespace)
        return True


def mark_local_head(namespace: str) -> None:
    """Records that `up` started the local head, so that `down` stops it."""
    registry = _system(namespace)
    _call(lambda: registry.kv_put.remote(LOCAL_HEAD_KEY, True))


def _ray_cli() -> str:
    """The `ray` command next to this Python (the one of the installed Ray), else on PATH."""
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_cli is None:
        raise SchedulingError("the `ray` command is not installed next to this Python")
    return ray_cli


def start_local_head() -> None:
    """Starts a local Ray head that outlives this process, as `ray start --head` does."""
    ray_cli = _ray_cli()
    subprocess.run(
        [ray_cli, "start", "--head", "--disable-usage-stats"], check=True, stdout=subprocess.DEVNULL
    )


def up(config: SystemConfig, wait_s: float | None = None) -> dict[str, Any]:
    """Creates the registry, queens and health monitors of `config`; idempotent.

    Actors that already exist under their names are kept (change a running system with
    `down` then `up`). Waits until every pool's first agents answer or their
    `ready_timeout_s` passes (at most `wait_s`), so a pool asking for resources the cluster
    lacks is reported as pending instead of hanging the call.

    Returns:
        The system status, as `status` reports it.
    """
    ns = config.namespace
    control = (
        {**_CONTROL, "resources": dict(config.control_resources)} if config.control_resources else _CONTROL
    )
    journal = config.registry.journal_uri or default_journal_uri(ns, "_registry")
    registry = _Registry.options(name=names.REGISTRY, namespace=ns, **control).remote(
        config.registry, config.model_dump(mode="json", by_alias=True), journal
    )
    _get(registry.set_system_config.remote(config.model_dump(mode="json", by_alias=True)))
    queens, monitors = [], []
    for swarm in config.swarms.values():
        queens.append(
            _Queen.options(
                name=names.queen(swarm.name), namespace=ns, max_concurrency=100_000, **control
            ).remote(ns, swarm, config.registry)
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
        ).remote(ns, name, store)
        for name, store in _memory_stores(config)
    ]
    _get([m.stats.remote() for m in memories], timeout_s=300)  # loaded before agents use them
    if config.ai is not None:
        from actors._private.llm_agent import AI_URL_KEY
        from serve import deploy

        url = deploy(config.ai, app_name=ai_app_name(ns))
        _get(registry.kv_put.remote(AI_URL_KEY, url))
    _get([q.start.remote() for q in queens])
    _get([m.start.remote() for m in monitors])
    ready_s = max(p.ready_timeout_s for s in config.swarms.values() for p in s.pools.values())
    deadline = time.monotonic() + min(ready_s, wait_s if wait_s is not None else ready_s)
    while time.monotonic() < deadline:
        rows = [a for q in _get([q.status.remote() for q in queens]) for a in q["agents"]]
        if all(a["state"] != "pending" for a in rows):
            break
        time.sleep(0.2)
    _get([m.check.remote() for m in monitors])  # report health as of now, not of start-up
    return status(ns)


def ai_app_name(namespace: str) -> str:
    """The Serve application name of a system's AI service."""
    return f"{namespace}-ai"


def _memory_stores(config: SystemConfig) -> list[tuple[str, Any]]:
    """(name, MemoryStoreConfig) of every memory store the config asks for."""
    stores = [(s.name, s.memory) for s in config.swarms.values() if s.memory is not None]
    if config.global_memory is not None:
        stores.append(("global", config.global_memory))
    return stores


def _existing(name: str, namespace: str) -> Any | None:
    """The handle of the named actor, or None when there is none."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def _system(namespace: str) -> Any:
    registry = _existing(names.REGISTRY, namespace)
    if registry is None:
        raise SystemNotFoundError(namespace)
    return registry


def status(namespace: str = "swarmray") -> dict[str, Any]:
    """Swarms with health and queue depths, and every agent's state.

    Raises:
        SystemNotFoundError: nothing runs in `namespace`.
    """
    registry = _system(namespace)
    table = {row["name"]: row for row in _call(registry.table.remote)}
    config = _call(registry.system_config.remote)
    swarms = []
    for name in sorted(config.get("swarms", {})):
        queen = ray.get_actor(names.queen(name), namespace=namespace)
        monitor = ray.get_actor(names.monitor(name), namespace=namespace)
        q, m = _call(lambda q=queen, m=monitor: [q.status.remote(), m.report.remote()])
        swarms.append({**q, "registry": table.get(name, {}), "health": m})
    memories = []
    for name in [*sorted(config.get("swarms", {})), "global"]:
        if (store := _existing(names.memory(name), namespace)) is not None:
            memories.append(_call(store.stats.remote))
    ai = None
    if config.get("ai") is not None:
        from actors._private.llm_agent import AI_URL_KEY

        ai = {
            "url": _call(lambda: registry.kv_get.remote(AI_URL_KEY)),
            "app": ai_app_name(namespace),
            "smoke_test_models": [n for n, m in config["ai"]["models"].items() if m.get("source") is None],
        }
    return {"namespace": namespace, "swarms": swarms, "memory": memories, "ai": ai}


def down(namespace: str = "swarmray") -> list[str]:
    """Removes every actor of the system in `namespace`, and a local head `up` started.

    Returns:
        The names of the actors removed.
    """
    registry = _system(namespace)
    config = _call(registry.system_config.remote)
    started_head = _call(lambda: registry.kv_get.remote(LOCAL_HEAD_KEY, False))
    removed = []
    for swarm in config.get("swarms", {}):
        for name in (names.monitor(swarm), names.queen(swarm)):
            if (handle := _existing(name, namespace)) is None:
                continue
            if name.startswith("queen:"):
                try:
                    _call(lambda h=handle: h.stop.remote(purge=True), timeout_s=30, retry_s=30)
                except Exception:  # a dead queen takes its agents with it anyway
                    pass
            ray.kill(handle, no_restart=True)
            removed.append(name)
    for name in [*config.get("swarms", {}), "global"]:
        if (store := _existing(names.memory(name), namespace)) is None:
            continue
        ray.kill(store, no_restart=True)  # its data stays on disk: memory outlives `down`
        removed.append(names.memory(name))
    if config.get("ai") is not None:
        from ray import serve

        serve.delete(ai_app_name(namespace))
        removed.append(f"Serve application {ai_app_name(namespace)}")
    _call(lambda: registry.purge.remote(), retry_s=30)
    ray.kill(registry, no_restart=True)
    removed.append(names.REGISTRY)
    if started_head:
        ray.shutdown()
        subprocess.run([_ray_cli(), "stop"], check=False, stdout=subprocess.DEVNULL)
        removed.append("local Ray head")
    return removed


class Client:
    """Submits tasks to a running system and reads their results.

    Calls ride out a queen or registry that Ray is restarting: they are retried with
    exponential backoff (tenacity) for up to `retry_s`. Submits are safe to retry because the
    client names each task itself and a queen accepts a task id once.

    Example:
        client = Client()
        result = client.run("text.stats", {"text": "Ray runs actors."})
        print(result.output["words"])
    """

    def __init__(self, namespace: str = "swarmray", address: str | None = None, retry_s: float = 60.0):
        connect(address, namespace)
        self.namespace = namespace
        self.registry = _system(namespace)
        self._queens: dict[str, Any] = {}
        self.retry_s = retry_s

    def _call(self, make_ref: Callable[[], Any], timeout_s: float | None = None) -> Any:
        # A queen made anew (after `down` and `up`) has a new handle: forget the cached ones.
        return _call(make_ref, timeout_s, self.retry_s, on_retry=self._queens.clear)

    def queen(self, swarm: str) -> Any:
        """The actor handle of `swarm`'s queen."""
        if swarm not in self._queens:
            try:
                self._queens[swarm] = ray.get_actor(names.queen(swarm), namespace=self.namespace)
            except ValueError:
                known = list(self._call(self.registry.system_config.remote).get("swarms", {}))
                raise SwarmNotFoundError(swarm, known) from None
        return self._queens[swarm]

    def _task(
        self, capability: str, payload: dict | None, swarm: str | None, **fields: Any
    ) -> tuple[str, Task]:
        if swarm is None:
            swarm = self._call(lambda: self.registry.route.remote(capability, []))
        task_id = f"{swarm}:{uuid.uuid4().hex[:16]}"
        return swarm, Task(id=task_id, capability=capability, payload=payload or {}, **fields)

    def submit(
        self,
        capability: str,
        payload: dict | None = None,
        *,
        swarm: str | None = None,
        priority: int = 0,
        timeout_s: float | None = None,
        max_retries: int | None = None,
    ) -> str:
        """Submits a task and returns its id once the queen has journaled it.

        Args:
            capability: What the task needs, e.g. 'text.stats'.
            payload: The agent's input.
            swarm: The swarm whose queen takes the task; None lets the registry choose.
            priority: Higher runs first.
            timeout_s: Per-attempt timeout.
            max_retries: Extra attempts after a failure.

        Raises:
            UnknownCapabilityError, BackpressureError, DelegationError, SwarmNotFoundError.
        """
        swarm, task = self._task(
            capability, payload, swarm, priority=priority, timeout_s=timeout_s, max_retries=max_retries
        )
        return self._call(lambda: self.queen(swarm).submit.remote(task))

    def submit_many(
        self, capability: str, payloads: list[dict], *, swarm: str | None = None, **fields: Any
    ) -> list[str]:
        """Submits one task per payload in a single call to one queen; returns their ids."""
        if swarm is None:
            swarm = self._call(lambda: self.registry.route.remote(capability, []))
        tasks = [self._task(capability, p, swarm, **fields)[1] for p in payloads]
        return self._call(lambda: self.queen(swarm).submit_many.remote(tasks))

    def result(self, task_id: str, timeout_s: float | None = None) -> TaskResult:
        """The task's result, waiting up to `timeout_s` (None: until it ends)."""
        swarm = task_id.partition(":")[0]
        return self._call(lambda: self.queen(swarm).result.remote(task_id, timeout_s))

    def run(self, capability: str, payload: dict | None = None, **kwargs: Any) -> TaskResult:
        """Submits a task and waits for its result."""
        return self.result(self.submit(capability, payload, **kwargs))

    def cancel(self, task_id: str) -> bool:
        """Cancels a task that has not ended."""
        swarm = task_id.partition(":")[0]
        return self._call(lambda: self.queen(swarm).cancel.remote(task_id))

    def status(self) -> dict[str, Any]:
        """The system's status (see `status`)."""
        return status(self.namespace)


def unwrap(result: TaskResult) -> Any:
    """The output of a succeeded task; raises the matching TaskError otherwise."""
    errors = {"failed": TaskFailedError, "timed_out": TaskTimeoutError, "cancelled": TaskCancelledError}
    if result.ok:
        return result.output
    cls = errors.get(result.status.value, TaskFailedError)
    raise cls(result.task_id, f"{result.status.value}: {result.error_type}: {result.error}")
