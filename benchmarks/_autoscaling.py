"""A fake multi-node cluster under Ray's real autoscaler, fitted to one small machine, and the
cluster recipe fitted to it. `benchmarks/autoscale.py` runs them; nothing here starts Ray at
import.

`FittedCluster` is Ray's `AutoscalingCluster` (the v1 `StandardAutoscaler` in the head's
monitor, over `FakeMultiNodeProvider`, which starts each "node" as a raylet of its own on this
machine) made fit to run beside other Rays: its own ports and temp directory, and a stop that
ends its own processes only (Ray's class runs `ray stop --force`, which ends every Ray here).
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from ray._common.utils import get_ray_address_file
from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID
from ray.cluster_utils import AutoscalingCluster

__all__ = [
    "FAKE_HEAD_NODE_ID",
    "FittedCluster",
    "fitted_recipe",
    "node_types_from",
]

ROOT = Path(__file__).resolve().parent.parent
# The provider's fixed head: its type and node id; workers' ids count up from it.
FAKE_HEAD_TYPE = "ray.head.default"
# Each fake node's object store: Ray's least (75 MiB) and a little, not its default share of
# /dev/shm per node.
OBJECT_STORE_BYTES = 100 * 2**20
# Resources a launcher file gives per CPU: scaled with the CPUs.
PER_CPU = ("CPU", "cpu_agents")
# How long a worker sits idle before the autoscaler removes it (Ray's own fake-cluster example
# uses 0.1; ray-cluster.yaml's 10 would make a test wait ten minutes).
IDLE_TIMEOUT_MINUTES = 0.1
# How long a `stats` agent above min_agents sits idle before its pool gives it back.
SCALE_DOWN_IDLE_S = 3
MAX_WORKERS_PER_TYPE = 2


def node_types_from(
    path: Path = ROOT / "ray-cluster.yaml", cpus: int = 4
) -> tuple[dict[str, float], dict[str, dict[str, Any]], dict[str, Any]]:
    """The node types of a cluster launcher file, fitted to this machine.

    Names and resource keys stay as the file has them; each type's per-CPU resources scale so
    the head has `cpus` CPUs (8 -> 4); at most MAX_WORKERS_PER_TYPE workers of a type, the
    cluster's cap their sum; each with a small object store.

    Returns:
        The head's resources, the worker types (as `AutoscalingCluster` takes them), and the
        top-level settings (`max_workers`, `idle_timeout_minutes`).
    """
    config = yaml.safe_load(Path(path).read_text())
    types = config["available_node_types"]
    head_name = config["head_node_type"]
    scale = cpus / types[head_name]["resources"]["CPU"]

    def fit(resources: dict[str, float]) -> dict[str, float]:
        return {k: (max(1, int(v * scale)) if k in PER_CPU else v) for k, v in resources.items()}

    workers = {
        name: {
            "resources": {**fit(t["resources"]), "object_store_memory": OBJECT_STORE_BYTES},
            "node_config": {},
            "min_workers": t.get("min_workers", 0),
            "max_workers": min(t["max_workers"], MAX_WORKERS_PER_TYPE),
        }
        for name, t in types.items()
        if name != head_name
    }
    top = {
        "max_workers": sum(t["max_workers"] for t in workers.values()),
        "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
    }
    return fit(types[head_name]["resources"]), workers, top


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FittedCluster(AutoscalingCluster):
    """A head alone under Ray's v1 autoscaler with fake worker node types, which it adds and
    removes as demand asks; started on free ports in a temp directory of its own.

    `start()`, then connect to `address`; `set_max_workers` changes the config the autoscaler
    re-reads each second; `autoscaler_report()` is what it last published; `shutdown()` stops
    this cluster's processes and no others.
    """

    def __init__(
        self,
        head_resources: dict[str, float],
        worker_node_types: dict[str, dict[str, Any]],
        env: dict[str, str] | None = None,
        **config_kwargs: Any,
    ):
        self.temp_dir = tempfile.mkdtemp(prefix="sr-as-")
        self.config_path = os.path.join(self.temp_dir, "autoscaling.json")
        self.port = _free_port()
        from ray._private.services import get_node_ip_address

        self.address = f"{get_node_ip_address()}:{self.port}"
        self.session: str | None = None
        self._env = env
        super().__init__(copy.deepcopy(head_resources), copy.deepcopy(worker_node_types), **config_kwargs)

    def _generate_config(
        self, head_resources: dict, worker_node_types: dict, autoscaler_v2: bool = False, **config_kwargs: Any
    ) -> dict[str, Any]:
        # What Ray's fake_multi_node/example.yaml holds (the wheel lacks it): the monitor reads
        # every key on each update.
        config: dict[str, Any] = {
            "cluster_name": "fitted",
            "max_workers": 8,
            "provider": {
                "type": "fake_multinode",
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
                "gcs_address": self.address,  # else workers join whatever listens on :6379
            },
            "available_node_types": {
                **worker_node_types,
                FAKE_HEAD_TYPE: {"resources": head_resources, "node_config": {}, "max_workers": 0},
            },
            "head_node_type": FAKE_HEAD_TYPE,
            "auth": {},
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
            "docker": {},
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
        }
        config.update(config_kwargs)
        return config

    def start(self, _system_config: dict | None = None, override_env: dict | None = None) -> None:
        """Starts the head (no workers: the autoscaler adds them) and waits for its GCS."""
        from cluster._private.connection import HEAD_ENV, ray_cli

        default = Path(get_ray_address_file(None))
        self._address_before = default.read_text() if default.exists() else None

        self._write(self._config)
        head = dict(self._head_resources)
        cpus, gpus = head.pop("CPU", 0), head.pop("GPU", 0)
        bin_dir = str(Path(sys.executable).parent)
        base = self._env if self._env is not None else dict(os.environ)
        env = {
            **base,
            **HEAD_ENV,
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            # A node whose raylet died is reaped after this long (Ray's default is 30).
            "AUTOSCALER_HEARTBEAT_TIMEOUT_S": "10",
            "PATH": os.pathsep.join([bin_dir, base.get("PATH", "")]),
            "PYTHONPATH": os.pathsep.join([str(ROOT), base.get("PYTHONPATH", "")]),
            **(override_env or {}),
        }
        proc = subprocess.run(
            [
                ray_cli(),
                "start",
                "--head",
                f"--port={self.port}",
                f"--dashboard-port={_free_port()}",
                f"--metrics-export-port={_free_port()}",
                f"--dashboard-agent-listen-port={_free_port()}",
                f"--ray-client-server-port={_free_port()}",
                f"--temp-dir={self.temp_dir}",
                f"--num-cpus={cpus}",
                f"--num-gpus={gpus}",
                f"--resources={json.dumps(head)}",
                f"--object-store-memory={OBJECT_STORE_BYTES}",
                f"--autoscaling-config={self.config_path}",
                "--disable-usage-stats",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"`ray start --head` failed: {proc.stderr.strip()[-2000:]}")
        self.session = Path(os.path.realpath(os.path.join(self.temp_dir, "session_latest"))).name

    def shutdown(self) -> None:
        """Stops this cluster's processes (the fake workers are the monitor's children), never
        another Ray's."""
        from cluster._private.connection import stop_head

        if self.session is not None:
            stop_head(self.session, self.address)
            self.session = None
            # The fake nodes wrote this head's address into Ray's default address file, where a
            # later `ray.init()` on the machine would wait for it, gone: what was there goes back.
            default = Path(get_ray_address_file(None))
            if default.exists() and default.read_text().strip() == self.address:
                if self._address_before is None:
                    default.unlink()
                else:
                    default.write_text(self._address_before)

    def set_max_workers(self, node_type: str, n: int) -> None:
        """Sets a node type's `max_workers`; the autoscaler removes nodes above it within a
        second or two, as it would on `ray up` of a changed file."""
        self._config["available_node_types"][node_type]["max_workers"] = n
        self._write(self._config)

    def _write(self, config: dict[str, Any]) -> None:
        tmp = f"{self.config_path}.tmp"
        with open(tmp, "w") as f:
            json.dump(config, f)
        os.replace(tmp, self.config_path)  # the monitor never reads half a file

    @staticmethod
    def autoscaler_report() -> dict[str, Any]:
        """The autoscaler's last published view (`active_nodes` by type, `pending_launches`,
        `pending_nodes`, `failed_nodes`), from the cluster this process is connected to."""
        from ray._private import ray_constants
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        return json.loads(raw)["autoscaler_report"] if raw else {}

    @staticmethod
    def active_nodes() -> dict[str, int]:
        """Nodes of each type the autoscaler counts as running."""
        return dict(FittedCluster.autoscaler_report().get("active_nodes") or {})


def wait_for(condition: Any, timeout_s: float, what: str, poll_s: float = 0.5) -> Any:
    """`condition()`'s first truthy value; raises TimeoutError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s} s for {what}")
        time.sleep(poll_s)


def fitted_recipe(directory: Path, recipe: Path = ROOT / "configs" / "cluster.yaml") -> dict[str, Any]:
    """`configs/cluster.yaml` as the fitted cluster runs it, changed only where one small
    machine must differ (tests/unit/test_autoscaling_fit.py holds the rest to the file):

    - its `s3://` journals and memories under `directory` (one machine: one disk);
    - without the AI and facts services (a model replica and Serve; their placement has tests of
      its own), which leaves the swarms, the registry, the memory stores and control_resources;
    - the `stats` pool runs `bench.nonce` (waits `payload.s`, so a backlog builds) and gives
      idle agents back after SCALE_DOWN_IDLE_S, its bounds and resources kept;
    - plus pool `ai.gpu` (one A10G GPU per agent: the first gpu_worker comes for it) and swarm
      `edge` whose pool `h100` asks for an accelerator no node type offers.
    """
    # Through JSON: the file's YAML anchors would otherwise share one mapping between swarms.
    data = json.loads(json.dumps(yaml.safe_load(Path(recipe).read_text())))
    for path in _uris(data):
        parent, key = path[:-1], path[-1]
        node = _at(data, parent)
        node[key] = str(directory / node[key].removeprefix("s3://").split("/", 1)[1])
    data.pop("ai")
    data.pop("facts")
    stats = data["swarms"]["ai"]["pools"]["stats"]
    stats["agent"] = {"class": "benchmarks._agents:NonceAgent"}
    stats["scale_down_idle_s"] = SCALE_DOWN_IDLE_S
    data["swarms"]["ai"]["pools"]["gpu"] = {
        "agent": {"class": "benchmarks._agents:NoopAgent"},
        "resources": {"num_gpus": 1, "accelerator_type": "A10G"},
        "min_agents": 1,
        "ready_timeout_s": 1,
    }
    data["swarms"]["edge"] = {
        "description": "Agents that want an accelerator no node type offers.",
        "pools": {
            "h100": {
                "agent": {"class": "benchmarks._agents:CheckAgent"},
                "resources": {"num_gpus": 1, "accelerator_type": "H100"},
                "ready_timeout_s": 1,
            }
        },
    }
    return data


def _uris(data: Any, path: tuple = ()) -> list[tuple]:
    """The key paths of every `s3://` string in `data`."""
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _uris(v, (*path, k))]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in _uris(v, (*path, i))]
    return [path] if isinstance(data, str) and data.startswith("s3://") else []


def _at(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data
