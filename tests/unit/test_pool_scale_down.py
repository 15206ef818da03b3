"""Which idle host a pool gives back: never its last ones on the head while it has others on
nodes the autoscaler could remove, or those nodes are never idle and never given back."""

from __future__ import annotations

import itertools
import time

import pytest

from actors._private import pool as pool_module
from actors._private.config import AgentPoolConfig
from actors._private.pool import ALIVE, AgentPool, AgentSlot, HostSlot

HEAD, WORKER = "head-node", "worker-node"


@pytest.fixture
def head_is(monkeypatch):
    monkeypatch.setattr(pool_module, "_head_node_id", lambda: HEAD)


def a_pool(nodes: list[str], min_agents: int) -> tuple[AgentPool, list[list]]:
    """A pool of ALIVE hosts, one agent each, on `nodes` (oldest first), all long idle."""
    lost: list[list] = []
    config = AgentPoolConfig(
        name="stats",
        agent={"class": "actors:TextStatsAgent"},
        min_agents=min_agents,
        max_agents=8,
        scale_down_idle_s=1,
    )
    pool = AgentPool("ns", "ai", config, lambda _: None, lost.append, lambda _: None, itertools.count())
    for i, node in enumerate(nodes):
        # `local`: no actor to kill; where it runs is `node_id`, as a host's ready() tells it.
        host = HostSlot(id=f"ai.stats.h{i}", handle=None, agents=[], state=ALIVE, node_id=node, local=True)
        host.agents = [AgentSlot(f"ai.stats.{i}", "stats", host, ("text.stats",), 1, last_active=0.0)]
        pool.hosts[host.id] = host
    return pool, lost


def test_an_idle_head_host_stays_while_the_pool_runs_on_a_worker(head_is):
    pool, lost = a_pool([HEAD, HEAD, WORKER], min_agents=2)
    busy = pool.hosts["ai.stats.h2"].agents[0]
    busy.inflight, busy.last_active = 1, time.monotonic()
    # The head's second host is idle, the worker's is not: giving the head's back would leave
    # the pool's floor on the worker, which would then never be idle.
    assert pool.autoscale(backlog=0) == 0 and not lost
    busy.inflight, busy.last_active = 0, 0.0
    assert pool.autoscale(backlog=0) == -1
    assert [a.id for a in lost[0]] == ["ai.stats.2"]
    assert pool.autoscale(backlog=0) == 0  # at min_agents, both on the head
    assert {h.node_id for h in pool.hosts.values()} == {HEAD}


def test_a_pool_gives_back_its_worker_hosts_before_newer_ones_on_the_head(head_is):
    # The head freed a slot mid-run and a newer host took it: the workers' go first all the same.
    pool, lost = a_pool([HEAD, WORKER, WORKER, HEAD], min_agents=2)
    while pool.autoscale(backlog=0):
        pass
    assert [a.id for agents in lost for a in agents] == ["ai.stats.2", "ai.stats.1"]
    assert {h.node_id for h in pool.hosts.values()} == {HEAD}


def test_without_a_known_head_the_newest_idle_host_goes_first(monkeypatch):
    monkeypatch.setattr(pool_module, "_head_node_id", lambda: "")
    pool, lost = a_pool([WORKER, HEAD, WORKER], min_agents=1)
    assert pool.autoscale(backlog=0) == -1 and [a.id for a in lost[0]] == ["ai.stats.2"]


def test_idle_head_hosts_above_the_floor_go_while_a_worker_host_is_busy(head_is):
    # Held on the head, they would take its cpu_agents from other pools for as long as the one
    # on the worker stays busy; the floor itself stays on the head.
    pool, lost = a_pool([HEAD, HEAD, HEAD, WORKER], min_agents=1)
    busy = pool.hosts["ai.stats.h3"].agents[0]
    busy.inflight, busy.last_active = 1, time.monotonic()
    while pool.autoscale(backlog=0):
        pass
    assert [a.id for agents in lost for a in agents] == ["ai.stats.2", "ai.stats.1"]
    assert sorted(h.id for h in pool.hosts.values()) == ["ai.stats.h0", "ai.stats.h3"]
