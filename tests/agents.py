"""Agents the tests use to make failures, delays and ordering observable."""

from __future__ import annotations

import asyncio
import os
import threading
import time

from pydantic import BaseModel, Field, TypeAdapter

from actors import Agent, PayloadError, Task


class SleepAgent(Agent):
    """`test.sleep`: sleeps `payload.s` seconds, then reports when it started."""

    capabilities = ("test.sleep",)

    async def handle(self, task: Task) -> dict:
        started = time.time()
        await asyncio.sleep(float(task.payload.get("s", 0)))
        return {"label": task.payload.get("label"), "started": started}


class FlakyAgent(Agent):
    """`test.flaky`: raises on the first `payload.fail_times` attempts of each task."""

    capabilities = ("test.flaky",)

    async def handle(self, task: Task) -> dict:
        if task.attempt <= int(task.payload.get("fail_times", 0)):
            raise RuntimeError(f"planned failure on attempt {task.attempt}")
        return {"attempt": task.attempt}


def double(payload: dict) -> int:
    """A plain function for the `callable` agent kind."""
    return 2 * int(payload["x"])


class CounterAgent(Agent):
    """`test.count`: counts the tasks it handled; the count survives restarts by checkpoint."""

    capabilities = ("test.count",)

    def __init__(self):
        self.count = 0

    async def handle(self, task: Task) -> int:
        self.count += 1
        return self.count

    def snapshot(self) -> int:
        return self.count

    def restore(self, state: int) -> None:
        self.count = state


class BrokenAgent(Agent):
    """`test.broken`: its constructor always raises, as a missing model file would make it."""

    capabilities = ("test.broken",)

    def __init__(self):
        raise RuntimeError("no weights at /models/missing")

    async def handle(self, task: Task) -> None:
        raise AssertionError("never constructed")


class FragileAgent(Agent):
    """`test.fragile`: starts until the file `gate` exists, then its constructor raises, so a
    host restarted after that never starts again."""

    capabilities = ("test.fragile",)

    def __init__(self, gate: str):
        if os.path.exists(gate):
            raise RuntimeError(f"{gate} exists: this agent no longer starts")

    async def handle(self, task: Task) -> dict:
        return {}


class BlockingAgent(Agent):
    """`test.block`: sync work that sleeps `payload.s` seconds in its thread (a thread cannot be
    stopped); counts how many such threads run at once, over every instance in the process."""

    capabilities = ("test.block",)
    running = 0
    most = 0
    guard = threading.Lock()

    def handle(self, task: Task) -> dict:
        cls = type(self)
        with cls.guard:
            cls.running += 1
            cls.most = max(cls.most, cls.running)
        try:
            time.sleep(float(task.payload.get("s", 0)))
        finally:
            with cls.guard:
                cls.running -= 1
        return {"slept": task.payload.get("s", 0)}


class PickyAgent(Agent):
    """`test.picky`: declares no payload model, and refuses input itself: a PayloadError for a
    missing `x`, a pydantic ValidationError for an `x` that is not a number."""

    capabilities = ("test.picky",)
    attempts = 0

    async def handle(self, task: Task) -> float:
        type(self).attempts += 1
        if "x" not in task.payload:
            raise PayloadError("test.picky", [("x", "required")])
        return TypeAdapter(float).validate_python(task.payload["x"]) * 2


class TallyInput(BaseModel):
    path: str = Field(description="A file that gets one line per run.")
    word: str = Field(description="The word to write.")
    wait_for: str | None = Field(None, description="A file to wait for, after writing, before returning.")


class TallyAgent(Agent):
    """`test.tally`: appends `word` to the file at `path`, one line per run, so a test counts how
    often it ran, across processes; returns the word in capitals and the lines so far."""

    capabilities = ("test.tally",)
    payloads = {"test.tally": TallyInput}
    descriptions = {"test.tally": "Writes the word down; returns it in capitals."}

    def handle(self, task: Task) -> dict:
        with open(task.payload["path"], "a") as f:
            f.write(task.payload["word"] + "\n")
        with open(task.payload["path"]) as f:
            lines = sum(1 for _ in f)
        while task.payload["wait_for"] and not os.path.exists(task.payload["wait_for"]):
            time.sleep(0.02)  # a test's gate: the run stays in flight until the test opens it
        return {"word": task.payload["word"].upper(), "lines": lines}


class EchoFamilyAgent(Agent):
    """`echo.*`: a family; answers any capability under it with that name and the payload,
    after `payload.s` seconds."""

    capabilities = ("echo.*",)

    def __init__(self, listed: tuple[str, ...] = ("a", "b"), listing_fails: bool = False):
        self.listed = listed

    async def handle(self, task: Task) -> dict:
        await asyncio.sleep(float(task.payload.get("s", 0)))
        return {"capability": task.capability, "payload": task.payload}

    @classmethod
    async def catalog_entries(cls, params: dict, family: str, namespace: str) -> list[dict]:
        """The members `params["listed"]` names (saying the system's namespace they were listed
        in), and one outside the family (to be dropped)."""
        if params.get("listing_fails"):
            raise ConnectionError("the listing is down")
        prefix = family.removesuffix("*")
        listed = params.get("listed", ("a", "b"))
        return [
            {
                "capability": prefix + name,
                "description": f"echoes as {name} (listed in {namespace})",
                "payload_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
                "output_schema": {"type": "object"},
                "annotations": {"readOnlyHint": True},
            }
            for name in listed
        ] + [{"capability": "other.thing", "description": "not in the family"}]


RED_PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
SILENT_WAV = "UklGRiwAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQgAAACAgICAgICAgA=="


class ConformanceAgent(Agent):
    """The tools the MCP conformance suite's server scenarios call, as swarm capabilities: each
    answers an MCP `CallToolResult` (which the /mcp endpoint passes through, as it does a
    federated tool's), `test_error_handling` fails its task, and `test_tool_with_progress` runs
    long enough for the endpoint's progress notifications."""

    capabilities = (
        "test_simple_text",
        "test_image_content",
        "test_audio_content",
        "test_embedded_resource",
        "test_multiple_content_types",
        "test_error_handling",
        "test_tool_with_progress",
    )
    descriptions = {c: f"The conformance suite's {c}." for c in capabilities}

    async def handle(self, task: Task) -> dict:
        image = {"type": "image", "data": RED_PIXEL_PNG, "mimeType": "image/png"}
        match task.capability:
            case "test_simple_text":
                content = [{"type": "text", "text": "This is a simple text response for testing."}]
            case "test_image_content":
                content = [image]
            case "test_audio_content":
                content = [{"type": "audio", "data": SILENT_WAV, "mimeType": "audio/wav"}]
            case "test_embedded_resource":
                resource = {"uri": "test://embedded-resource", "mimeType": "text/plain"}
                content = [
                    {
                        "type": "resource",
                        "resource": {**resource, "text": "This is an embedded resource content."},
                    }
                ]
            case "test_multiple_content_types":
                resource = {"uri": "test://mixed-content-resource", "mimeType": "application/json"}
                content = [
                    {"type": "text", "text": "Multiple content types test:"},
                    image,
                    {"type": "resource", "resource": {**resource, "text": '{"test":"data","value":123}'}},
                ]
            case "test_error_handling":
                raise RuntimeError("This tool intentionally returns an error for testing")
            case _:  # test_tool_with_progress: the endpoint reports progress while it waits
                await asyncio.sleep(float(task.payload.get("s", 1.0)))
                content = [{"type": "text", "text": "done"}]
        return {"content": content}


class MisannotatedAgent(Agent):
    """Declares an MCP hint that does not exist (`readOnlyHnt`): its config must be refused."""

    capabilities = ("misannotated.run",)
    annotations = {"misannotated.run": {"readOnlyHnt": True}}

    async def handle(self, task: Task) -> None:
        return None
