"""Payloads are checked before anything runs, and a payload error is never retried."""

import asyncio

import pytest

from actors import MemoryAgent, PayloadError, Task, TaskStatus, TextStatsAgent
from actors._private.agents.agent import AgentContext
from actors._private.agents.builtin import MemoryDeleteInput, MemorySearchInput
from actors._private.agents.payload import check_payload
from tests.agents import PickyAgent
from tests.unit.test_queen import make_queen, pool, run

BUILTIN = {
    "text": pool("actors:TextStatsAgent"),
    "math": pool("actors:NumberStatsAgent"),
    "picky": pool("tests.agents:PickyAgent"),
}


def test_a_payload_that_does_not_fit_is_refused_at_submit_naming_each_field(tmp_path):
    queen = make_queen(tmp_path, BUILTIN)

    async def scenario():
        with pytest.raises(PayloadError) as missing:
            await queen.submit({"capability": "text.stats", "payload": {}})
        with pytest.raises(PayloadError) as several:
            await queen.submit({"capability": "math.stats", "payload": {"numbers": [1, "x"], "kk": 1}})
        ok = await queen.run({"capability": "math.stats", "payload": {"numbers": [1, 2, 3]}})
        return missing.value, several.value, ok

    missing, several, ok = run(scenario())
    assert str(missing) == "invalid payload for 'text.stats': text: required"
    assert missing.problems == [("text", "required")]
    assert [field for field, _ in several.problems] == ["numbers.1.int", "numbers.1.float", "kk"]
    assert ("kk", "unknown field") in several.problems
    assert ok.status is TaskStatus.SUCCEEDED and ok.output["max"] == 3  # ints stay ints
    assert queen.counts["accepted"] == 1  # the refused ones were never accepted


def test_a_payload_error_raised_by_the_agent_fails_the_task_after_one_attempt(tmp_path):
    queen = make_queen(tmp_path, BUILTIN, queen={"max_retries": 3, "retry_backoff_s": 0.01})
    PickyAgent.attempts = 0

    async def scenario():
        missing = await queen.run({"capability": "test.picky", "payload": {}})
        wrong = await queen.run({"capability": "test.picky", "payload": {"x": "seven"}})
        fine = await queen.run({"capability": "test.picky", "payload": {"x": 2}})
        return missing, wrong, fine

    missing, wrong, fine = run(scenario())
    assert missing.status is TaskStatus.FAILED and missing.attempts == 1
    assert missing.error == "invalid payload for 'test.picky': x: required"
    assert missing.error_type == "PayloadError"
    # A pydantic ValidationError out of `handle` is the input's fault too.
    assert wrong.status is TaskStatus.FAILED and wrong.attempts == 1 and wrong.error_type == "PayloadError"
    assert "Input should be a valid number" in wrong.error
    assert fine.output == 4.0 and PickyAgent.attempts == 3
    assert queen.counts["retried"] == 0


def test_memory_payloads_refuse_unknown_keys_and_delete_takes_id_or_ids():
    with pytest.raises(PayloadError, match=r"'memory\.search': kk: unknown field"):
        check_payload(MemorySearchInput, "memory.search", {"query": "q", "kk": 3})
    with pytest.raises(PayloadError) as no_id:
        check_payload(MemoryDeleteInput, "memory.delete", {})
    assert str(no_id.value) == "invalid payload for 'memory.delete': give `id` or `ids`"

    class Memory:  # records what the agent asks of its memory
        deleted = []

        async def delete(self, ids, scope):
            self.deleted.append((ids, scope))
            return len(ids)

    agent = MemoryAgent()
    agent.context = AgentContext("a", "storage", "memory", MemoryAgent.capabilities, Memory())

    def delete(payload):
        payload = check_payload(MemoryDeleteInput, "memory.delete", payload)
        return asyncio.run(agent.handle(Task(capability="memory.delete", payload=payload)))

    assert delete({"id": "n1"}) == {"deleted": 1}
    assert delete({"ids": ["a", "b"], "scope": "global"}) == {"deleted": 2}
    assert Memory.deleted == [(["n1"], "swarm"), (["a", "b"], "global")]


def test_the_catalog_lists_each_capability_with_its_schema(tmp_path):
    queen = make_queen(tmp_path, BUILTIN)
    catalog = {e["capability"]: e for e in asyncio.run(queen.catalog())}
    assert sorted(catalog) == ["math.stats", "test.picky", "text.stats"]
    text = catalog["text.stats"]
    assert text["swarm"] == "front" and text["pools"] == ["text"]
    assert text["description"] == TextStatsAgent.descriptions["text.stats"]
    assert text["schema"]["required"] == ["text"] and text["schema"]["additionalProperties"] is False
    assert catalog["test.picky"]["schema"] is None  # declares no model


def _builtin_agent_classes():
    import actors

    return [
        cls
        for name in actors.__all__
        if isinstance(cls := getattr(actors, name), type)
        and issubclass(cls, actors.Agent)
        and cls.capabilities
    ]


def test_every_builtin_capability_declares_its_payload_and_a_description_of_its_own():
    classes = _builtin_agent_classes()
    assert {"LLMAgent", "FactsAgent", "MemoryAgent", "TextStatsAgent"} <= {c.__name__ for c in classes}
    seen: dict[str, str] = {}
    for cls in classes:
        for cap in cls.capabilities:
            assert cap in cls.payloads, f"{cls.__name__} declares no payload model for {cap}"
            description = cls.descriptions.get(cap, "")
            assert description, f"{cls.__name__} describes no {cap}"
            assert cap not in description, f"{cap}'s description repeats its name: {description!r}"
            assert description not in seen, f"{cap} and {seen.get(description)} share {description!r}"
            seen[description] = cap


def test_a_capability_without_a_declared_description_falls_back_to_its_agents_docstring(tmp_path):
    queen = make_queen(tmp_path, BUILTIN)
    catalog = {e["capability"]: e for e in asyncio.run(queen.catalog())}
    assert catalog["test.picky"]["description"] == (PickyAgent.__doc__ or "").strip().splitlines()[0]


def test_an_llm_payload_lacking_its_template_field_is_refused_by_the_agent():
    from actors import LLMAgent
    from actors._private.agents.llm import LLMGenerateInput

    agent = LLMAgent(model="m", template="Q: {input} ({lang})")
    payload = check_payload(LLMGenerateInput, "llm.generate", {"lang": "en"})  # other fields allowed
    with pytest.raises(PayloadError) as missing:
        asyncio.run(agent.handle(Task(capability="llm.generate", payload=payload)))
    assert str(missing.value) == "invalid payload for 'llm.generate': input: required by the prompt template"
    with pytest.raises(PayloadError, match=r"namespaces\.0: Input should be a valid string"):
        check_payload(LLMGenerateInput, "llm.generate", {"input": "q", "namespaces": [1]})
