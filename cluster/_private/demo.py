"""The main job: bring a system up, run a short workload across its swarms, report, shut down."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from typing import Any

import ray

from actors._private.services import MCP_URL_KEY
from actors._private.task import TaskResult
from cluster._private.client import Client
from cluster._private.config import SystemConfig, load_config
from cluster._private.connection import call, connect, registry_of
from cluster._private.credentials import credentials_path, user_key
from cluster._private.endpoints import check_key_transport, url_here
from cluster._private.facts_client import FactsClient
from cluster._private.format import format_call_tool_result, format_result, format_status
from cluster._private.lifecycle import down, up
from cluster._private.status import status
from cluster._private.usage import format_usage, usage
from models._private.core.errors import SystemNotFoundError
from models._private.core.journal import journal_location
from models._private.core.names import bearer

__all__ = ["DEMO", "DEMO_DOCUMENTS", "DEMO_MCP_CALLS", "DEMO_TASKS", "FOLLOW_UP", "QUESTION", "run_demo"]

DEMO = "demo"  # the memory namespace of the demo's notes, and the facts namespace of its documents

_TEXT = (
    "Ray schedules tasks and actors across a cluster. Swarms of agents run on Ray actors. "
    "Each swarm has a queen that queues tasks and hands them to the least busy agent!"
)

# (swarm to submit to, capability, payload). The last two ask swarms for a capability they do
# not offer, so the registry delegates them to the swarm that does.
DEMO_TASKS: list[tuple[str, str, dict[str, Any]]] = [
    ("ai", "text.stats", {"text": _TEXT}),
    ("ai", "text.keywords", {"text": _TEXT, "top_n": 3}),
    ("ai", "text.readability", {"text": _TEXT}),
    ("storage", "data.checksum", {"text": "swarmray"}),
    (
        "storage",
        "data.validate",
        {
            "schema": {
                "type": "object",
                "required": ["id", "qty"],
                "properties": {"id": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
            },
            "document": {"id": "A-7", "qty": 0},
        },
    ),
    (
        "storage",
        "data.deduplicate",
        {
            "key": "email",
            "records": [
                {"email": "a@x.org", "n": 1},
                {"email": "b@x.org", "n": 2},
                {"email": "a@x.org", "n": 3},
            ],
        },
    ),
    ("business", "math.stats", {"numbers": [3, 1, 4, 1, 5, 9, 2, 6]}),
    (
        "business",
        "finance.invoice",
        {
            "tax_rate": 0.2,
            "items": [
                {"description": "GPU hours", "quantity": 3, "unit_price": 2.5},
                {"description": "storage", "quantity": 1, "unit_price": "0.99"},
            ],
        },
    ),
    ("business", "finance.amortize", {"principal": 10000, "annual_rate": 0.06, "months": 12}),
    ("business", "math.factorize", {"n": 600851475143}),
    ("business", "text.stats", {"text": "Delegated from business to ai."}),
    ("ai", "data.checksum", {"text": "delegated from ai to storage"}),
    # The demo's notes go to a memory namespace of their own (`configs/local.yaml` gives both
    # stores one), so the user's searches afterwards never meet them.
    (
        "storage",
        "memory.store",
        {"id": "demo-note-1", "text": "Ray restarts a detached actor after a crash.", "namespace": DEMO},
    ),
    (
        "storage",
        "memory.store",
        {
            "id": "demo-note-2",
            "text": "In swarmray, BM25 matches words and FAISS searches vectors.",
            "scope": "global",
            "namespace": DEMO,
        },
    ),
]

# Facts about a person and two cities: who was born where is in one document, which river runs
# through that city in another. Fixed ids make a second run's ingest a retry that changes nothing.
DEMO_DOCUMENTS = [
    {
        "id": "demo-marie-curie",
        "title": "Marie Curie",
        "text": "Marie Curie was a physicist and chemist who studied radioactivity. "
        "She was born in Warsaw in 1867. Pierre Curie married Marie Curie in 1895.",
    },
    {
        "id": "demo-warsaw",
        "title": "Warsaw",
        "text": "Warsaw is the capital of Poland. The city lies on the Vistula river.",
    },
    {
        "id": "demo-berlin",
        "title": "Berlin",
        "text": "Berlin is the capital of Germany. The city lies on the Spree river.",
    },
    {
        "id": "demo-paris",
        "title": "Paris",
        "text": "Paris is the capital of France. The city lies on the Seine river.",
    },
]
QUESTION = "Which river flows through the city where Marie Curie was born?"
DEMO_TASKS.append(("facts", "facts.ingest", {"namespace": DEMO, "documents": DEMO_DOCUMENTS}))

# Run after the tasks above have finished, so that they find what was stored.
FOLLOW_UP: list[tuple[str, str, dict[str, Any]]] = [
    (
        "storage",
        "memory.search",
        {"query": "what happens when an actor crashes?", "k": 1, "namespaces": [DEMO]},
    ),
    ("ai", "memory.search", {"query": "keyword matching", "k": 1, "scope": "global", "namespaces": [DEMO]}),
    # The LLM agent recalls the demo's note from the global memory and answers from it.
    ("ai", "llm.generate", {"input": "In swarmray, what matches words?", "namespaces": [DEMO]}),
    # Two hops: the question names Marie Curie; her document names Warsaw; Warsaw's names the river.
    ("facts", "facts.search", {"query": QUESTION, "namespaces": [DEMO], "k": 2}),
    ("facts", "facts.answer", {"input": QUESTION, "facts_namespaces": [DEMO]}),
    # A model that acts: its first step calls math.factorize, which business runs, as a child
    # task; its next answers from the result (the output shows each step).
    ("ai", "agent.run", {"input": "Factorize n = 360."}),
]
# Over MCP, with the SDK's client on the system's /mcp endpoint: a tool of the federated example
# server (configs/local.yaml runs it over stdio) and a swarm capability, each a task in a queen.
DEMO_MCP_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("mcp.example.word_count", {"text": _TEXT}),
    ("text.stats", {"text": _TEXT}),
]
_NEEDS = {"llm.generate": ("ai",), "facts.ingest": ("facts",), "facts.search": ("facts",)}
_NEEDS["facts.answer"] = ("ai", "facts")
_NEEDS["agent.run"] = ("ai",)


def _wait_for_extraction(namespace: str, tasks: list[Any], results: list[TaskResult]) -> None:
    """Waits until the facts service has read the documents the demo ingested (the searches
    that follow need their entities), at most two minutes."""
    jobs = [
        r.output["id"]
        for (_, c, _), r in zip(tasks, results[-len(tasks) :], strict=True)
        if c == "facts.ingest" and r.ok
    ]
    if jobs:
        facts = FactsClient.of_system(namespace)
        facts.wait(jobs, DEMO, timeout_s=120)
        facts.close()


def run_demo(config_path: str | None = None, address: str | None = None) -> int:
    """Runs the demo workload; returns 0 when every task succeeded, else 1.

    A system already running in the config's namespace (after `swarm up`) is used and left
    running, with the demo's notes and documents in its `demo` namespaces. Otherwise the demo
    brings up a system of its own, `<namespace>-demo`, and removes it and its data at the end:
    the user's own system never sees the demo's documents, keys or ledger.
    """
    config = load_config(config_path)  # fails before Ray starts
    started = time.monotonic()
    mcp_ok = True
    connect(address, config.namespace)
    created = not _runs(config.namespace)
    if created:
        config = _private_system(config)
        _remove_data(config.namespace)  # what an interrupted demo left behind
        up(config)
    try:
        print(f"system {config.namespace!r} up in {time.monotonic() - started:.1f} s")
        results = _run_workload(config)
        print("\n" + "\n".join(format_result(r) for r in results))
        print("\n" + format_status(status(config.namespace)))
        if config.mcp is not None and config.mcp.server is not None:
            mcp_ok = _show_mcp_calls(config.namespace)
        if config.ai is not None:  # what the tasks spent through the AI service (`swarm usage`)
            print("\n" + format_usage(usage(config.namespace, "swarm"), "swarm"))
    finally:
        if created:
            down(config.namespace)
            _remove_data(config.namespace)
        if address is None:
            ray.shutdown()
    print(
        f"\n{sum(r.ok for r in results)}/{len(results)} tasks succeeded; "
        f"done in {time.monotonic() - started:.1f} s"
    )
    return 0 if mcp_ok and all(r.ok for r in results) else 1


def _show_mcp_calls(namespace: str) -> bool:
    """Calls DEMO_MCP_CALLS over the system's /mcp endpoint (those its tools list offers) and
    prints each result; whether every one was offered and answered without an error."""
    url = url_here(call(lambda: registry_of(namespace).kv_get.remote(MCP_URL_KEY)))
    key = user_key(namespace)
    check_key_transport(url, key)
    offered, answers = asyncio.run(_mcp_calls(url, key))
    print(f"\nover MCP at {url} ({offered} tools listed):")
    ok = len(answers) == len(DEMO_MCP_CALLS)
    for name, result in answers:
        ok &= not result.get("isError")
        print(f"{name}: " + format_call_tool_result(result).replace("\n", "\n    "))
    for name in sorted({n for n, _ in DEMO_MCP_CALLS} - {n for n, _ in answers}):
        print(f"{name}: not offered by the /mcp endpoint")
    return ok


async def _mcp_calls(url: str, key: str | None) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
    """(tools listed, [(tool, CallToolResult JSON)]) of DEMO_MCP_CALLS the endpoint lists."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers=bearer(key), timeout=httpx2.Timeout(30, read=120))
    async with Client(streamable_http_client(url, http_client=http)) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        answers = []
        for name, arguments in DEMO_MCP_CALLS:
            if name in tools:
                result = await client.call_tool(name, arguments)
                answers.append((name, result.model_dump(mode="json", by_alias=True, exclude_none=True)))
    await http.aclose()
    return len(tools), answers


def _runs(namespace: str) -> bool:
    try:
        status(namespace)
        return True
    except SystemNotFoundError:
        return False


def _run_workload(config: SystemConfig) -> list[TaskResult]:
    client = Client(config.namespace)
    results: list[TaskResult] = []
    for phase in (DEMO_TASKS, FOLLOW_UP):
        tasks = [
            (s, c, p)
            for s, c, p in phase
            if s in config.swarms and all(getattr(config, n) is not None for n in _NEEDS.get(c, ()))
        ]
        ids = [client.submit(cap, payload, swarm=swarm) for swarm, cap, payload in tasks]
        ended = [client.result(task_id, timeout_s=120) for task_id in ids]
        results += ended
        _wait_for_extraction(config.namespace, tasks, ended)
    return results


def _private_system(config: SystemConfig) -> SystemConfig:
    """`config` as a system of the demo's own: namespace `<namespace>-demo`, with the memories'
    and services' local data at their defaults, below that namespace's own directory."""
    data = config.model_dump(mode="json", by_alias=True)
    data["namespace"] = f"{config.namespace}-demo"
    stores = [s["memory"] for s in data["swarms"].values() if s.get("memory")] + [data.get("global_memory")]
    for store in filter(None, stores):
        store["memory"]["path"] = None
    mcp_server = (data.get("mcp") or {}).get("server")
    for service in filter(None, (data.get("ai"), data.get("facts"), mcp_server)):
        service["auth"]["path"] = None
        if "path" in service:  # the facts service's data
            service["path"] = None
    return SystemConfig.model_validate(data)


def _remove_data(namespace: str) -> None:
    """Removes what a system of the demo's own keeps on disk: its default data directory (the
    journals, memories, facts, keys, ledger and audit log) and the user's key for it."""
    shutil.rmtree(os.path.dirname(journal_location(None, namespace, "_")), ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(credentials_path(namespace))
