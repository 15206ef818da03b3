"""Routing, delegation, balancing, priority, timeouts, retries and backpressure on real Ray."""

import pytest
import ray

from actors import Task, TaskStatus
from cluster import (
    BackpressureError,
    DelegationError,
    SwarmNotFoundError,
    TaskNotFoundError,
    UnknownCapabilityError,
    load_config,
)
from tests.conftest import running_system
from tests.waiting import wait_until

SLEEP = "tests.agents:SleepAgent"


def pool(cls, caps=None, **kw):
    agent = {"class": cls}
    if caps:
        agent["capabilities"] = caps
    return {"agent": agent, **kw}


CONFIG = {
    "registry": {"max_hops": 2},
    "swarms": {
        "alpha": {
            "queen": {"retry_backoff_s": 0.05},
            "pools": {
                "sleep": pool(SLEEP, agents_per_actor=2, min_agents=2, max_agents=2),
                "flaky": pool("tests.agents:FlakyAgent"),
                "stats": pool("actors:TextStatsAgent"),
            },
        },
        "beta": {
            "pools": {
                "slow": pool(SLEEP, ["test.slow"], agents_per_actor=2, min_agents=2, max_agents=2),
            }
        },
        "gamma": {
            "pools": {
                "slow": pool(SLEEP, ["test.slow"], agents_per_actor=2, min_agents=2, max_agents=2),
                "double": {
                    "agent": {
                        "class": "actors:CallableAgent",
                        "capabilities": ["calc.double"],
                        "params": {"function": "tests.agents:double"},
                    }
                },
            }
        },
        "inproc": {
            "queen": {"retry_backoff_s": 0.05},
            "pools": {
                "sleep": pool(SLEEP, ["test.inproc"], colocate=True, min_agents=2, max_agents=2),
                "flaky": pool("tests.agents:FlakyAgent", ["test.inproc_flaky"], colocate=True),
            },
        },
        "tiny": {"queen": {"max_queued_tasks": 2}, "pools": {"one": pool(SLEEP, ["test.tiny"])}},
        "elastic": {
            "pools": {
                "grow": pool(
                    SLEEP,
                    ["test.elastic"],
                    min_agents=1,
                    max_agents=3,
                    scale_up_backlog=1,
                    scale_down_idle_s=1,
                )
            }
        },
    },
}


@pytest.fixture(scope="module")
def client(head):
    config = load_config({**CONFIG, "namespace": "swarm-tests"})
    with running_system(config) as c:
        yield c


def test_every_agent_is_alive_after_up(client):
    agents = [a for s in client.status()["swarms"] for a in s["agents"]]
    assert len(agents) == 14
    assert {a["state"] for a in agents} == {"alive"}


def test_discovery_finds_every_swarm_offering_a_capability(client):
    assert set(ray.get(client.registry.discover.remote("test.slow"))) == {"beta", "gamma"}
    assert ray.get(client.registry.discover.remote("text.stats")) == ["alpha"]


def test_task_runs_on_the_swarm_it_was_submitted_to(client):
    result = client.run("text.stats", {"text": "One two three. Four!"}, swarm="alpha")
    assert result.ok and result.swarm == "alpha" and result.agent_id.startswith("alpha.stats")
    assert result.output["words"] == 4 and result.output["sentences"] == 2


def test_missing_capability_is_delegated_transparently(client):
    task_id = client.submit("calc.double", {"x": 21}, swarm="alpha")
    assert task_id.startswith("alpha:")  # the caller keeps talking to alpha
    result = client.result(task_id)
    assert result.ok and result.output == 42 and result.swarm == "gamma"
    status = ray.get(client.queen("alpha").status.remote())
    assert status["tasks"]["delegated"] >= 1


def test_a_batch_of_delegated_tasks_is_handed_over_in_one_call_and_all_results_come_back(client):
    alpha = client.queen("alpha")
    before = ray.get(alpha.status.remote())["delegation"]
    tasks = [Task(capability="calc.double", payload={"x": i}) for i in range(30)]
    results = ray.get(alpha.run_many.remote(tasks))
    assert [r.output for r in results] == [2 * i for i in range(30)]
    assert {r.swarm for r in results} == {"gamma"}
    after = ray.get(alpha.status.remote())["delegation"]
    assert after["hand_over_calls"] - before["hand_over_calls"] == 1
    assert after["route_calls"] - before["route_calls"] <= 1
    assert after["follow_calls"] - before["follow_calls"] < 30


def test_a_change_of_the_swarms_reaches_every_queen_s_route_cache(client):
    alpha = client.queen("alpha")
    generation = ray.get(alpha.status.remote())["delegation"]["routes_generation"]
    health = ray.get(client.registry.swarm.remote("beta"))["health"]
    other = "degraded" if health == "healthy" else "healthy"
    ray.get(client.registry.mark.remote("beta", other, "a test says so"))
    try:
        wait_until(
            lambda: ray.get(alpha.status.remote())["delegation"]["routes_generation"] > generation,
            20,
            "the registry's new generation at alpha",
        )
    finally:  # the next tests route to beta by its health; a heartbeat would undo it, later
        ray.get(client.registry.mark.remote("beta", health, "the test is over"))


def test_load_is_balanced_across_swarms_offering_a_capability(client):
    ids = [client.submit("test.slow", {"s": 0.3}, swarm="alpha") for _ in range(8)]
    ids += [client.submit("test.slow", {"s": 0.3}) for _ in range(8)]
    swarms = [client.result(i).swarm for i in ids]
    assert swarms.count("beta") + swarms.count("gamma") == 16
    # Heartbeats landing mid-burst may skew the split a little; never towards one swarm.
    assert abs(swarms.count("beta") - swarms.count("gamma")) <= 4


def test_higher_priority_runs_first(client):
    # Both agents busy; the first frees a second before the other, so everything queued runs on
    # it one after another (on two agents freed together, start times need not follow dispatch).
    blockers = [client.submit("test.sleep", {"s": s, "label": "block"}, swarm="alpha") for s in (1.0, 2.0)]
    low = [client.submit("test.sleep", {"label": f"low{i}"}, swarm="alpha", priority=0) for i in range(3)]
    high = client.submit("test.sleep", {"label": "high"}, swarm="alpha", priority=5)
    starts = {r.output["label"]: r.output["started"] for r in map(client.result, blockers + low + [high])}
    assert starts["high"] < min(starts[f"low{i}"] for i in range(3))
    assert starts["low0"] <= starts["low1"] <= starts["low2"]  # equal priority keeps order


def test_agents_packed_in_one_actor_run_concurrently(client):
    ids = [client.submit("test.sleep", {"s": 0.5}, swarm="alpha") for _ in range(2)]
    results = [client.result(i) for i in ids]
    assert {r.agent_id for r in results} == {"alpha.sleep.0", "alpha.sleep.1"}
    # Each started before the other had ended (0.5 s each): they overlapped.
    assert max(r.output["started"] for r in results) < min(r.output["started"] for r in results) + 0.5


def test_attempt_past_its_timeout_is_timed_out(client):
    result = client.run("test.sleep", {"s": 30}, swarm="alpha", timeout_s=0.3, max_retries=0)
    assert result.status is TaskStatus.TIMED_OUT and result.error_type == "TaskTimeoutError"
    assert result.timings.finished_at - result.timings.submitted_at < 10


def test_failed_attempts_are_retried_with_backoff(client):
    result = client.run("test.flaky", {"fail_times": 2}, swarm="alpha", max_retries=2)
    assert result.ok and result.attempts == 3 and result.output == {"attempt": 3}


def test_failure_on_every_attempt_reports_the_last_error(client):
    result = client.run("test.flaky", {"fail_times": 9}, swarm="alpha", max_retries=1)
    assert result.status is TaskStatus.FAILED and result.attempts == 2
    assert result.error_type == "RuntimeError" and "attempt 2" in result.error


def test_full_queue_refuses_with_backpressure(client):
    running = client.submit("test.tiny", {"s": 30}, swarm="tiny")
    # The one agent has taken it, so the next two wait in the queue.
    wait_until(lambda: client.result(running, timeout_s=0).status is TaskStatus.RUNNING)
    queued = [client.submit("test.tiny", {"s": 30}, swarm="tiny") for _ in range(2)]
    with pytest.raises(BackpressureError) as info:
        client.submit("test.tiny", {"s": 30}, swarm="tiny")
    assert (info.value.queued, info.value.max_queued, info.value.swarm) == (2, 2, "tiny")
    assert all(client.cancel(t) for t in [*queued, running])
    assert client.result(queued[0]).status is TaskStatus.CANCELLED


def test_unknown_capability_is_refused_with_what_is_offered(client):
    with pytest.raises(UnknownCapabilityError, match=r"'no\.such'") as info:
        client.submit("no.such", {})
    assert "text.stats" in info.value.known
    with pytest.raises(UnknownCapabilityError):
        client.submit("no.such", {}, swarm="alpha")


def test_hop_limit_stops_delegation(client):
    task = Task(capability="calc.double", payload={"x": 1}, hops=2)
    with pytest.raises(DelegationError, match="hop limit 2"):
        ray.get(client.queen("alpha").submit.remote(task))


def test_unknown_swarm_and_task_are_clear_errors(client):
    with pytest.raises(SwarmNotFoundError, match="'nowhere'"):
        client.submit("text.stats", {}, swarm="nowhere")
    with pytest.raises(TaskNotFoundError):
        client.result("alpha:0000")


def test_pool_grows_under_backlog_and_shrinks_when_idle(client):
    ids = [client.submit("test.elastic", {"s": 0.5}, swarm="elastic") for _ in range(12)]
    agents = {client.result(i).agent_id for i in ids}
    assert len(agents) > 1
    wait_until(
        lambda: [len(s["agents"]) for s in client.status()["swarms"] if s["swarm"] == "elastic"] == [1],
        what="the idle pool to shrink back to one agent",
    )


def test_killed_agent_is_replaced_and_work_goes_on(client):
    queen = client.queen("alpha")
    (host,) = [h for hid, h, _ in ray.get(queen.hosts.remote()) if hid.startswith("alpha.stats")]
    ray.kill(host)
    wait_until(
        lambda: (
            [
                (a["state"], a["restarts"])
                for a in ray.get(queen.status.remote())["agents"]
                if a["pool"] == "stats"
            ]
            == [("alive", 1)]
        ),
        what="the killed agent back, restarted once",
    )
    assert client.run("text.stats", {"text": "still here"}, swarm="alpha").ok


def test_colocated_agents_run_in_the_queen_with_the_same_semantics(client):
    queen = client.queen("inproc")
    assert ray.get(queen.hosts.remote()) == []  # nothing for the monitor to ping: they live in the queen
    ok = client.run("test.inproc", {"s": 0.01, "label": "x"}, swarm="inproc")
    assert ok.ok and ok.agent_id.startswith("inproc.sleep") and ok.output["label"] == "x"
    late = client.run("test.inproc", {"s": 30}, swarm="inproc", timeout_s=0.3, max_retries=0)
    assert late.status is TaskStatus.TIMED_OUT
    retried = client.run("test.inproc_flaky", {"fail_times": 1}, swarm="inproc", max_retries=1)
    assert retried.ok and retried.attempts == 2
    failed = client.run("test.inproc_flaky", {"fail_times": 5}, swarm="inproc", max_retries=0)
    assert failed.status is TaskStatus.FAILED and failed.error_type == "RuntimeError"
