"""The node types a cluster's autoscaler may still add, found without Ray publishing them.

A pool whose agents fit no node alive is either waiting for the autoscaler or infeasible; only
the autoscaler's node types tell the two apart. Ray has a place for them (GCS key
`__autoscaler_cluster_config`, read by `ray._private.state.state.get_cluster_config()`), but
Ray 2.60 never writes it. So the types come from, in this order:

1. that published `ClusterConfig`, for a Ray that writes it;
2. the autoscaler config file of this cluster's monitor: the head's `monitor.py` process whose
   `--gcs-address` names this cluster, started with `--autoscaling-config=<file>` (by `ray up`,
   `ray start --head --autoscaling-config`, Ray's fake multi-node cluster). The file's
   `available_node_types`, less the head's type, are the answer.

The second needs the caller on the head's machine, where a queen under `control_resources`
runs. Anywhere else, and on a head without an autoscaler, there are no node types, so a pool
no node fits is infeasible, as before.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import ray
import yaml

__all__ = [
    "NodeType",
    "autoscaling_config_path",
    "fits",
    "node_type_that_fits",
    "node_types",
    "node_types_of",
]

log = logging.getLogger(__name__)

# How long a search of the process list that found no autoscaler stands before the next one;
# a monitor found is kept until its process ends.
RESCAN_S = 10.0


@dataclass(frozen=True)
class NodeType:
    """One kind of node the autoscaler can add: what each offers, and how many it may have."""

    name: str
    resources: dict[str, float] = field(hash=False)
    min_workers: int = 0
    max_workers: int = 0


class ProcessLike(Protocol):
    """What the search reads of a process (a `psutil.Process` has it)."""

    def cmdline(self) -> list[str]: ...

    def cwd(self) -> str: ...

    def is_running(self) -> bool: ...


def node_types(
    gcs_address: str, processes: Callable[[], Iterable[ProcessLike]] | None = None
) -> list[NodeType]:
    """The worker node types of the cluster whose GCS is at `gcs_address` ([] if none known).

    `processes` lists this machine's processes (default: `psutil.process_iter`).
    """
    published = _published()
    if published is not None:
        return published
    path = autoscaling_config_path(gcs_address, processes)
    return _from_file(path) if path else []


def fits(demand: dict[str, float], resources: Any) -> bool:
    """Whether `resources` (a node's or a node type's) offer all of `demand`."""
    return all(resources.get(k, 0) >= v for k, v in demand.items())


def node_type_that_fits(demand: dict[str, float], types: Iterable[NodeType]) -> str:
    """The name of the first type that may still be added and offers all of `demand`, else ""."""
    for t in types:
        if t.max_workers > 0 and fits(demand, t.resources):
            return t.name
    return ""


def _published() -> list[NodeType] | None:
    """Ray's own `ClusterConfig`, or None where Ray has not published one (Ray 2.60 never does)."""
    try:
        config = ray._private.state.state.get_cluster_config()
    except Exception:  # not connected, or a Ray without the reader
        return None
    groups = getattr(config, "node_group_configs", None) or []
    if not groups:
        return None
    unlimited = 2**31  # Ray's max_count -1
    return [
        NodeType(g.name, dict(g.resources), g.min_count, unlimited if g.max_count < 0 else g.max_count)
        for g in groups
    ]


# -- the monitor's config file ----------------------------------------------------------------

# gcs address -> (the monitor process, its config file), or (None, checked at) when none was.
_monitors: dict[str, tuple[ProcessLike, str] | tuple[None, float]] = {}


def autoscaling_config_path(
    gcs_address: str, processes: Callable[[], Iterable[ProcessLike]] | None = None
) -> str:
    """The `--autoscaling-config` file of the autoscaler of the cluster at `gcs_address`, as an
    absolute path, or "" if no process on this machine is that autoscaler."""
    found = _monitors.get(gcs_address)
    if found is not None:
        proc, known = found
        if proc is None and time.monotonic() - known < RESCAN_S:
            return ""
        if proc is not None and _alive(proc):
            return known
    path, proc = "", None
    for candidate in (processes or _psutil_processes)():
        try:
            path = _config_of(candidate, gcs_address)
        except Exception:  # it ended, or is another user's: not ours to read
            continue
        if path:
            proc = candidate
            break
    _monitors[gcs_address] = (proc, path) if proc is not None else (None, time.monotonic())
    return path


def _psutil_processes() -> Iterable[ProcessLike]:
    import psutil  # a dependency of Ray's

    # Fresh Process objects: `process_iter` caches one per PID, stale once the PID is reused.
    for pid in psutil.pids():
        try:
            yield psutil.Process(pid)
        except psutil.Error:  # gone since listed
            continue


def _alive(proc: ProcessLike) -> bool:
    try:
        return proc.is_running()
    except Exception:
        return False


def _config_of(proc: ProcessLike, gcs_address: str) -> str:
    """The config path if `proc` is the autoscaling monitor of the cluster at `gcs_address`."""
    argv = proc.cmdline()
    if not any(os.path.basename(a) == "monitor.py" for a in argv):
        return ""
    flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    config = flags.get("autoscaling-config", "")
    if not config or not _same_gcs(flags.get("gcs-address", ""), gcs_address):
        return ""
    # The monitor expands `~` and resolves a relative path against its own directory.
    return os.path.join(proc.cwd(), os.path.expanduser(config))


def _same_gcs(theirs: str, ours: str) -> bool:
    # The monitor runs on this machine, so its GCS does too: the port alone names the cluster,
    # whichever of the machine's addresses each side spells.
    return bool(theirs) and theirs.rpartition(":")[2] == ours.rpartition(":")[2]


# path -> (mtime_ns, types): the monitor re-reads its file on every update, so this does too
# when the file changes.
_files: dict[str, tuple[int, list[NodeType]]] = {}


def _from_file(path: str) -> list[NodeType]:
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return []
    cached = _files.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        with open(path) as f:
            config = yaml.safe_load(f)  # `ray up` writes JSON, which YAML reads too
        types = node_types_of(config)
    except Exception as e:
        log.warning("cannot read the autoscaler's node types from %s: %s", path, e)
        types = []
    _files[path] = (mtime, types)
    return types


def node_types_of(config: dict[str, Any]) -> list[NodeType]:
    """The worker node types of an autoscaler config (a cluster launcher file), head left out."""
    head = config.get("head_node_type")
    # Ray fills a type's missing max_workers with the cluster's; the cluster's cap binds both.
    cluster_max = int(config.get("max_workers", 2))
    return [
        NodeType(
            name,
            {k: float(v) for k, v in (t.get("resources") or {}).items()},
            int(t.get("min_workers", 0)),
            min(int(t.get("max_workers", cluster_max)), cluster_max),
        )
        for name, t in (config.get("available_node_types") or {}).items()
        if name != head
    ]
