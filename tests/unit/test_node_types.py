"""Node types read from the autoscaler's own config file, found through its monitor process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import yaml

from actors._private import node_types as nt
from tests.conftest import ROOT

GCS = "10.0.0.5:6379"
MONITOR = "/venv/lib/python3.11/site-packages/ray/autoscaler/_private/monitor.py"
A10G = {"GPU": 1, "accelerator_type:A10G": 0.001}
H100 = {"GPU": 1, "accelerator_type:H100": 0.001}


@dataclass
class FakeProcess:
    """A process as psutil shows it: its command line, directory, and whether it still runs."""

    argv: list[str]
    directory: str = "/"
    running: bool = True
    readable: bool = True

    def cmdline(self) -> list[str]:
        if not self.readable:
            raise PermissionError("another user's process")
        return self.argv

    def cwd(self) -> str:
        return self.directory

    def is_running(self) -> bool:
        return self.running


def monitor(gcs: str, config: str | None, **kw) -> FakeProcess:
    argv = ["/venv/bin/python", "-u", MONITOR, "--logs-dir=/tmp/ray/logs", f"--gcs-address={gcs}"]
    return FakeProcess(argv + ([f"--autoscaling-config={config}"] if config else []), **kw)


class Machine:
    """The process list, counting how often it was read."""

    def __init__(self, *procs: FakeProcess):
        self.procs, self.reads = list(procs), 0

    def __call__(self):
        self.reads += 1
        return iter(self.procs)


@pytest.fixture(autouse=True)
def _fresh_caches(monkeypatch):
    monkeypatch.setattr(nt, "_monitors", {})
    monkeypatch.setattr(nt, "_files", {})


def write(path, **config) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_the_launchers_node_types_come_from_this_clusters_monitor_only(tmp_path):
    other = write(tmp_path / "other.yaml", available_node_types={"big": {"resources": {"GPU": 8}}})
    machine = Machine(
        FakeProcess(["/venv/bin/python", "worker.py", f"--gcs-address={GCS}"]),  # not a monitor
        monitor(GCS, None),  # a head without an autoscaler: no config to read
        monitor("10.0.0.5:63790", other),  # another cluster's, on a port ours is a prefix of
        FakeProcess(["python", MONITOR, f"--gcs-address={GCS}"], readable=False),
        monitor("127.0.0.1:6379", str(ROOT / "ray-cluster.yaml")),  # ours, by another address
    )
    types = {t.name: t for t in nt.node_types(GCS, machine)}
    assert sorted(types) == ["cpu_worker", "gpu_worker"]  # the head's type is not one to add
    file = yaml.safe_load((ROOT / "ray-cluster.yaml").read_text())["available_node_types"]
    assert types["gpu_worker"].resources == {k: float(v) for k, v in file["gpu_worker"]["resources"].items()}
    assert types["gpu_worker"].max_workers == file["gpu_worker"]["max_workers"]
    assert nt.node_type_that_fits(A10G, types.values()) == "gpu_worker"
    assert nt.node_type_that_fits(H100, types.values()) == ""
    assert nt.node_type_that_fits({"control": 0.001}, types.values()) == ""  # only the head's
    assert nt.node_types("10.0.0.5:1", machine) == []  # a cluster with no monitor here


def test_a_relative_or_home_path_is_the_monitors_own(tmp_path, monkeypatch):
    (tmp_path / "head").mkdir()
    write(tmp_path / "head" / "c.yaml", available_node_types={"w": {"resources": {"CPU": 2}}})
    assert nt.autoscaling_config_path(GCS, Machine(monitor(GCS, "c.yaml", directory=str(tmp_path / "head"))))
    monkeypatch.setattr(nt, "_monitors", {})
    monkeypatch.setenv("HOME", str(tmp_path / "head"))
    path = nt.autoscaling_config_path(GCS, Machine(monitor(GCS, "~/c.yaml")))
    assert path == str(tmp_path / "head" / "c.yaml")
    assert [t.name for t in nt.node_types(GCS, Machine())] == ["w"]  # the monitor found is kept


def test_a_changed_file_is_read_again_and_limits_bind(tmp_path):
    path = tmp_path / "c.yaml"
    cpu = {"resources": {"CPU": 2, "cpu_agents": 2}, "max_workers": 2}
    write(path, max_workers=4, head_node_type="head", available_node_types={"head": {}, "cpu_worker": cpu})
    machine = Machine(monitor(GCS, str(path)))
    assert nt.node_type_that_fits({"cpu_agents": 1}, nt.node_types(GCS, machine)) == "cpu_worker"
    # The autoscaler re-reads its file on each update; a type limited to 0 is added no more.
    write(path, max_workers=4, available_node_types={"cpu_worker": {**cpu, "max_workers": 0}})
    os.utime(path, ns=(1, 1))  # a new mtime even within the clock's resolution
    assert nt.node_type_that_fits({"cpu_agents": 1}, nt.node_types(GCS, machine)) == ""
    write(path, max_workers=0, available_node_types={"cpu_worker": cpu})  # the cluster's cap binds
    os.utime(path, ns=(2, 2))
    assert nt.node_types(GCS, machine)[0].max_workers == 0
    assert machine.reads == 1  # the process list was searched once: the monitor still runs


def test_an_ended_monitor_is_searched_for_again_and_none_found_is_remembered_a_while(tmp_path):
    path = write(tmp_path / "c.yaml", available_node_types={"w": {"resources": {"CPU": 2}}})
    first = monitor(GCS, path)
    machine = Machine(first)
    assert nt.autoscaling_config_path(GCS, machine) == path
    first.running = False
    machine.procs = [monitor(GCS, None)]  # the head restarted without an autoscaler
    assert nt.autoscaling_config_path(GCS, machine) == ""
    assert nt.autoscaling_config_path(GCS, machine) == ""
    assert machine.reads == 2  # the second miss within RESCAN_S did not search again


def test_an_unreadable_file_offers_no_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("available_node_types: [not, a, mapping")
    assert nt.node_types(GCS, Machine(monitor(GCS, str(path)))) == []
    assert nt.node_types("10.0.0.5:7", Machine(monitor("10.0.0.5:7", str(tmp_path / "gone.yaml")))) == []
