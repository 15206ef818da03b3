"""An agent host in this process (as colocated pools run it): what it hands back to the queen."""

import asyncio

import pytest

from actors import Agent, AgentConfig, Task
from actors._private.host import AgentHost


class Returns(Agent):
    """Returns whatever the test put in `payload["make"]`'s table."""

    capabilities = ("test.returns",)
    outputs = {
        "set": lambda: {"tags": {"a", "b"}},
        "object": lambda: {"at": object()},
        "tuple": lambda: {"pair": (1, 2), 3: "int key"},
    }

    async def handle(self, task):
        return self.outputs[task.payload["make"]]()


class KeepsASet(Agent):
    capabilities = ("test.keeps",)

    def __init__(self):
        self.seen = set()

    async def handle(self, task):
        self.seen.add(task.id)
        return len(self.seen)

    def snapshot(self):
        return {"seen": self.seen}


def host_of(cls) -> AgentHost:
    config = AgentConfig(class_path=f"{__name__}:{cls.__name__}")
    return AgentHost("ns", "s", "p", config, ["s.p.0"])


def handle(host, make):
    task = Task(id="s:1", capability="test.returns", payload={"make": make})
    return asyncio.run(host.handle("s.p.0", task))


@pytest.mark.parametrize("make", ["set", "object"])
def test_an_output_that_is_not_json_is_refused_with_a_clear_error(make):
    with pytest.raises(TypeError, match=r"agent s\.p\.0 returned an output that is not JSON"):
        handle(host_of(Returns), make)


def test_an_output_comes_back_as_the_journal_will_replay_it():
    output, _, spent = handle(host_of(Returns), "tuple")
    assert output == {"pair": [1, 2], "3": "int key"} and spent is None  # no AI service asked


def test_a_checkpoint_that_is_not_json_is_refused_with_a_clear_error():
    host = host_of(KeepsASet)
    task = Task(id="s:1", capability="test.keeps", payload={})
    with pytest.raises(TypeError, match=r"agent s\.p\.0 returned a checkpoint that is not JSON"):
        asyncio.run(host.handle("s.p.0", task))


def test_a_host_traces_as_its_queen_says_and_answers_ready_without_the_registry(monkeypatch, tmp_path):
    # A host used to ask the registry for the system's tracing in `ready`, tracing on or off:
    # a registry restarting then failed the host's start, and three such failures made its pool
    # give up. The queen now hands its tracing config to the host's constructor.
    import ray

    from actors._private.agents.tasks import TaskClient
    from models._private.core import tracing

    async def registry_restarting(self, key):
        raise ray.exceptions.RayActorError()

    monkeypatch.setattr(TaskClient, "kv_get", registry_restarting)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    monkeypatch.setattr(ray, "get_runtime_context", lambda: type("C", (), {"get_node_id": lambda s: "n1"})())
    config = AgentConfig(class_path=f"{__name__}:{Returns.__name__}")
    trace = tracing.TracingConfig(enabled=True, directory=str(tmp_path))
    try:
        host = AgentHost("ns", "s", "p", config, ["s.p.0"], trace=trace)
        assert tracing.enabled()
        assert asyncio.run(host.ready())["node_id"] == "n1"
    finally:
        tracing.shutdown()
