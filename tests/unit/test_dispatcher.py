from actors._private.pool import ALIVE, AgentSlot, HostSlot
from actors._private.queen.dispatch import Dispatcher


def agents(n, caps=("x",), max_concurrent=1):
    host = HostSlot(id="h", handle=None, agents=[], state=ALIVE)
    host.agents = [AgentSlot(f"a{i}", "p", host, caps, max_concurrent) for i in range(n)]
    return host.agents


def test_acquire_takes_the_least_loaded_agent():
    d = Dispatcher()
    a = agents(2, max_concurrent=2)
    d.add(a)
    first, second = d.acquire("x"), d.acquire("x")
    assert {first.id, second.id} == {"a0", "a1"}  # one each before anyone gets two
    assert d.acquire("x").inflight == 2


def test_no_agent_when_all_are_full_until_one_is_released():
    d = Dispatcher()
    (a,) = agents(1)
    d.add([a])
    assert d.acquire("x") is a
    assert d.acquire("x") is None and not d.has_free("x")
    d.release(a)
    assert d.acquire("x") is a


def test_equal_agents_take_turns():
    d = Dispatcher()
    d.add(agents(3))
    order = []
    for _ in range(6):
        agent = d.acquire("x")
        order.append(agent.id)
        d.release(agent)
    assert order == ["a0", "a1", "a2", "a0", "a1", "a2"]


def test_removed_agents_are_not_handed_out_even_when_released():
    d = Dispatcher()
    (a,) = agents(1)
    d.add([a])
    busy = d.acquire("x")
    a.host.state = "dead"
    d.remove([a])
    d.release(busy)
    assert d.acquire("x") is None and d.alive("x") == 0


def test_agents_serve_each_of_their_capabilities():
    d = Dispatcher()
    (a,) = agents(1, caps=("x", "y"))
    d.add([a])
    assert d.acquire("y") is a
    assert d.acquire("x") is None  # the one slot is taken, whichever capability took it
