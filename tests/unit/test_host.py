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
