"""OTP restart strategies, intensity and escalation, the delegation breaker, checkpoints."""

import pytest
import ray

from cluster import load_config, up
from tests.conftest import running_system
from tests.waiting import wait_until


def three_pools(strategy, **supervision):
    stats = {"agent": {"class": "actors:TextStatsAgent"}}
    return {
        "supervision": {"strategy": strategy, **supervision},
        "health": {"period_s": 0.5},
        "pools": {
            "a": stats,
            "b": {"agent": {"class": "actors:KeywordsAgent"}},
            "c": {"agent": {"class": "actors:ChecksumAgent"}},
        },
    }


def restarts_after_killing_b(client):
    queen = client.queen("s")
    (host_b,) = [h for hid, h, _ in ray.get(queen.hosts.remote()) if ".b." in hid]
    ray.kill(host_b)
    # The supervisor restarts every victim of one failure in one step, so once all are alive
    # again with some restarted, a wrongly restarted sibling would already show.
    wait_until(
        lambda: (
            (agents := ray.get(queen.status.remote())["agents"])
            and all(a["state"] == "alive" for a in agents)
            and any(a["restarts"] for a in agents)
        ),
        what="the restarted agents alive",
    )
    return {a["pool"]: a["restarts"] for a in ray.get(queen.status.remote())["agents"]}


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("one_for_one", {"a": 0, "b": 1, "c": 0}),
        ("one_for_all", {"a": 1, "b": 1, "c": 1}),
        ("rest_for_one", {"a": 0, "b": 1, "c": 1}),
    ],
)
def test_restart_strategy_decides_which_agents_restart(head, namespace, strategy, expected):
    config = load_config({"namespace": namespace, "swarms": {"s": three_pools(strategy)}})
    with running_system(config) as client:
        assert restarts_after_killing_b(client) == expected
        status = client.status()["swarms"][0]["supervision"]
        assert status["strategy"] == strategy and status["restarts_in_window"] == 1


def test_intensity_exceeded_fails_the_swarm_and_its_work_moves_elsewhere(head, namespace):
    config = load_config(
        {
            "namespace": namespace,
            "swarms": {
                "s": three_pools("one_for_one", max_restarts=2, period_s=60, recover_after_s=None),
                "backup": {
                    "health": {"period_s": 0.5},
                    "pools": {"a": {"agent": {"class": "actors:TextStatsAgent"}}},
                },
            },
        }
    )
    with running_system(config) as client:
        queen = client.queen("s")
        for _ in range(3):  # three failures within the window; max_restarts is 2
            alive = wait_until(
                lambda: [
                    h for hid, h, state in ray.get(queen.hosts.remote()) if ".a." in hid and state == "alive"
                ],
                what="an alive host in pool a",
            )
            ray.kill(alive[0])
            wait_until(  # the monitor has noticed and the supervisor acted
                lambda killed=alive[0]: all(h != killed for _, h, _ in ray.get(queen.hosts.remote())),
                what="the killed host handled",
            )
        status = ray.get(queen.status.remote())
        assert status["supervision"]["state"] == "failed"
        assert (
            "restart intensity exceeded: 3 restarts within 60 s (max_restarts 2)"
            in status["supervision"]["reason"]
        )
        assert status["agents"] == []  # escalation stopped every child
        wait_until(lambda: ray.get(client.registry.swarm.remote("s"))["health"] == "failed", what="s failed")
        assert client.run("text.stats", {"text": "goes to backup"}).swarm == "backup"
        moved = client.run("text.stats", {"text": "sent to s"}, swarm="s")
        assert moved.ok and moved.swarm == "backup"  # s hands its capability over while failed
        up(config)  # `swarm up` again brings the failed swarm back
        assert client.run("text.keywords", {"text": "back again"}, swarm="s").ok


def test_failed_swarm_recovers_by_itself_after_recover_after_s(head, namespace):
    swarm = three_pools("one_for_all", max_restarts=0, period_s=60, recover_after_s=2)
    config = load_config({"namespace": namespace, "swarms": {"s": swarm}})
    with running_system(config) as client:
        queen = client.queen("s")
        ray.kill(ray.get(queen.hosts.remote())[0][1])
        wait_until(
            lambda: ray.get(queen.status.remote())["supervision"]["state"] == "failed", what="escalation"
        )
        queued = client.submit("text.stats", {"text": "waits for recovery"}, swarm="s")
        result = client.result(queued, timeout_s=60)
        assert result.ok and result.swarm == "s"
        assert ray.get(queen.status.remote())["supervision"]["state"] == "running"


def test_breaker_skips_a_dead_swarm_and_closes_when_it_is_back(head, namespace):
    stats = {"pools": {"a": {"agent": {"class": "actors:TextStatsAgent"}}}}
    config = load_config(
        {
            "namespace": namespace,
            "registry": {"conflict_policy": "priority"},
            "swarms": {
                "front": {
                    "delegation_breaker": {"failure_threshold": 1, "cooldown_s": 2},
                    "pools": {"x": {"agent": {"class": "actors:ChecksumAgent"}}},
                },
                "primary": {**stats, "priority": 10},
                "spare": stats,
            },
        }
    )
    with running_system(config) as client:
        front = client.queen("front")
        assert client.run("text.stats", {"text": "a"}, swarm="front").swarm == "primary"
        ray.kill(client.queen("primary"), no_restart=True)  # gone for good, still registered
        assert client.run("text.stats", {"text": "b"}, swarm="front").swarm == "spare"
        assert ray.get(front.status.remote())["breakers"]["primary"] == "open"
        assert client.run("text.stats", {"text": "c"}, swarm="front").swarm == "spare"
        up(config)  # a new primary queen
        # Once the cool-down has passed the breaker is half-open: the next delegation probes.
        wait_until(lambda: ray.get(front.status.remote())["breakers"]["primary"] == "half_open")
        assert client.run("text.stats", {"text": "d"}, swarm="front").swarm == "primary"
        assert ray.get(front.status.remote())["breakers"]["primary"] == "closed"


def test_agent_state_survives_its_restart_through_checkpoints(head, namespace):
    config = load_config(
        {
            "namespace": namespace,
            "swarms": {
                "s": {
                    "health": {"period_s": 0.5},
                    "pools": {"count": {"agent": {"class": "tests.agents:CounterAgent"}}},
                }
            },
        }
    )
    with running_system(config) as client:
        assert [client.run("test.count", {}, swarm="s").output for _ in range(3)] == [1, 2, 3]
        queen = client.queen("s")
        ray.kill(ray.get(queen.hosts.remote())[0][1])
        result = client.run("test.count", {}, swarm="s")
        assert result.ok and result.output == 4
        assert ray.get(queen.status.remote())["agents"][0]["restarts"] == 1


def test_a_host_whose_cancelled_work_stays_stuck_is_replaced(head, namespace):
    swarm = {
        "queen": {"max_retries": 0, "stuck_after_s": 1.0},
        "pools": {"b": {"agent": {"class": "tests.agents:BlockingAgent"}}},
    }
    config = load_config({"namespace": namespace, "swarms": {"s": swarm}})
    with running_system(config) as client:
        stuck = client.run("test.block", {"s": 600}, timeout_s=0.3)
        assert stuck.status.value == "timed_out"
        # The thread sleeps on, so the agent takes nothing else until its host is replaced,
        # about a second after the timeout; then the next task runs on the new host.
        after = client.run("test.block", {"s": 0}, timeout_s=30)
        assert after.ok and after.timings.started_at >= stuck.timings.finished_at + 1.0
        agents = client.status()["swarms"][0]["agents"]
        assert agents[0]["restarts"] == 1
        assert client.status()["swarms"][0]["supervision"]["total_restarts"] == 1
