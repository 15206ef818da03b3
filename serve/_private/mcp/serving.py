"""What the /mcp endpoint does for a request, in one replica: the tools (the queens' catalog, read
at most every `catalog_ttl_s`), a tool call run as a task through a queen, the two built-ins,
and the federation's resources, prompts and completions passed through.

The system's actors are reached by name in its Ray namespace (`ray.get_actor`), never imported:
`serve` does not import `actors`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from typing import Any

import mcp_types as types

from mcp.server.caching import CacheHint
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from models._private.core import names, tracing
from models._private.core.retry import unwrap_error
from serve._private.auth.keys import KeyRecord, matches_any
from serve._private.mcp.config import McpServiceConfig
from serve._private.mcp.tools import (
    MAX_K,
    RECALL_MEMORY,
    SEARCH_FACTS,
    ToolEntry,
    allowed_swarms,
    builtin_tools,
    call_result,
    error_result,
    facts_namespaces,
    tools_from_catalog,
    visible,
)

__all__ = ["McpBackend", "build_server"]

log = logging.getLogger("swarmray.serve")

FINAL = ("succeeded", "failed", "timed_out", "cancelled")
SERVER_NAME = "swarmray"


def _status(result: Any) -> str:
    status = getattr(result, "status", None)
    return str(getattr(status, "value", status))


class McpBackend:
    """One replica's view of the system for the MCP handlers.

    Args:
        config: The endpoint's config.
        system: The system's Ray namespace.
    """

    def __init__(self, config: McpServiceConfig, system: str):
        self.config, self.system = config, system
        self._tools: dict[str, ToolEntry] | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    def _actor(self, name: str) -> Any:
        import ray

        return ray.get_actor(name, namespace=self.system)

    # -- the tools ------------------------------------------------------------------------

    async def tools(self) -> dict[str, ToolEntry]:
        """Every tool, by name: the registry's swarms' catalogs (cached `catalog_ttl_s`) and the
        built-ins. A swarm whose queen does not answer is left out of this reading."""
        if self._tools is not None and time.monotonic() - self._read_at < self.config.catalog_ttl_s:
            return self._tools
        async with self._lock:  # one reading for all the requests that find it stale
            if self._tools is not None and time.monotonic() - self._read_at < self.config.catalog_ttl_s:
                return self._tools
            try:
                table = await self._actor(names.REGISTRY).table.remote()
            except Exception as e:  # no system in this namespace, or its registry restarting
                cause = unwrap_error(e)
                why = (
                    f"the system's registry does not answer ({type(cause).__name__}: {cause}); retry shortly"
                )
                raise MCPError(types.INTERNAL_ERROR, why) from None

            async def catalog(swarm: str) -> list[dict[str, Any]]:
                try:
                    return await self._actor(names.queen(swarm)).catalog.remote()
                except Exception as e:  # a queen restarting: its tools are back at the next reading
                    log.warning("mcp: the catalog of swarm %s is unavailable: %r", swarm, e)
                    return []

            catalogs = await asyncio.gather(*(catalog(row["name"]) for row in table))
            tools = tools_from_catalog([e for c in catalogs for e in c])
            tools.update(builtin_tools())
            self._tools, self._read_at = tools, time.monotonic()
            return tools

    async def list_tools(self, record: KeyRecord | None) -> list[dict[str, Any]]:
        """The tools `record` may see, as `tools/list` gives them."""
        return [t.tool() for t in (await self.tools()).values() if visible(record, t)]

    async def find(self, name: str, record: KeyRecord | None) -> ToolEntry:
        """The tool `name`, if the key sees it.

        Raises:
            MCPError: INVALID_PARAMS, the same for a tool that does not exist and one the key may
                not see (so that a limited key learns nothing of the others).
        """
        tool = (await self.tools()).get(name)
        if tool is None or not visible(record, tool):
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {name}")
        return tool

    # -- calls ----------------------------------------------------------------------------

    async def call(
        self, ctx: Any, tool: ToolEntry, arguments: dict[str, Any], record: KeyRecord | None
    ) -> dict[str, Any]:
        """`CallToolResult` JSON of one call: a capability's task, or a built-in. With tracing
        on, in a span `tool.call <name>` under the request's server span (as an agent's tool
        call is), which the task's trace goes on under."""
        if not tracing.enabled():
            return await self._call(ctx, tool, arguments, record, None)
        # The request's context is handed over in its scope rather than taken from the current
        # span: the SDK runs this handler in tasks of its own, whose context it does not promise.
        parent = _state(ctx).get("trace") or {}
        with tracing.span(f"tool.call {tool.name}", parent, attributes={"swarmray.tool": tool.name}) as span:
            out = await self._call(ctx, tool, arguments, record, span)
            if out.get("isError"):
                span.set_attribute("swarmray.error", " ".join(c.get("text", "") for c in out["content"]))
            return out

    async def _call(
        self, ctx: Any, tool: ToolEntry, arguments: dict[str, Any], record: KeyRecord | None, span: Any
    ) -> dict[str, Any]:
        if tool.name == SEARCH_FACTS:
            return await self._search_facts(arguments, record)
        if tool.name == RECALL_MEMORY:
            return await self._recall_memory(arguments, record)
        return await self._run_task(ctx, tool, arguments, record, span)

    async def _run_task(
        self, ctx: Any, tool: ToolEntry, arguments: dict[str, Any], record: KeyRecord | None, span: Any
    ) -> dict[str, Any]:
        # The swarms the key may not use are "visited": the registry routes around them.
        barred = [s for s in tool.swarms if s not in allowed_swarms(record, tool.swarms)]
        try:
            swarm = await self._actor(names.REGISTRY).route.remote(tool.name, barred)
            queen = self._actor(names.queen(swarm))
            task = {"capability": tool.name, "payload": arguments, "trace": tracing.carrier()}
            task_id = await queen.submit.remote(task)
        except Exception as e:  # refused: a payload error, no routable swarm, backpressure
            cause = unwrap_error(e)
            return error_result(f"{tool.name} was not run: {type(cause).__name__}: {cause}")
        if span is not None:
            span.set_attribute("swarmray.child_task_id", task_id)
        began, finished, reports = time.monotonic(), False, 0
        deadline = began + self.config.call_timeout_s
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    await queen.cancel.remote(task_id)
                    finished = True
                    limit = self.config.call_timeout_s
                    return error_result(f"task {task_id} did not end within {limit:g} s and was cancelled")
                try:
                    result = await queen.result.remote(task_id, min(self.config.progress_interval_s, left))
                except Exception as e:  # the queen restarting: the task is cancelled (finally) if it can be
                    cause = unwrap_error(e)
                    return error_result(
                        f"task {task_id}: its queen did not answer ({type(cause).__name__}: {cause})"
                    )
                status = _status(result)
                if status in FINAL:
                    finished = True
                    break
                reports += 1  # strictly increasing, as the spec asks of progress
                message = f"task {task_id} {status} for {time.monotonic() - began:.0f} s"
                await ctx.session.report_progress(reports, None, message)
        finally:
            if not finished:  # the client went away or cancelled: so does the task
                queen.cancel.remote(task_id)
                log.info("mcp: task %s cancelled: its caller went away", task_id)
        if status != "succeeded":
            why = f"{result.error_type}: {result.error}" if result.error_type else (result.error or status)
            return error_result(f"task {task_id} {status}: {why}")
        return call_result(result.output, tool.output_schema)

    async def _search_facts(self, arguments: dict[str, Any], record: KeyRecord | None) -> dict[str, Any]:
        from ray import serve

        query, k, mode = arguments.get("query"), arguments.get("k", 5), arguments.get("mode", "hybrid")
        if not isinstance(query, str) or not query.strip():
            return error_result("query: a non-empty string is required")
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            return error_result(f"k: an integer from 1 to {MAX_K} is required")
        if mode not in ("passages", "facts", "hybrid", "graph"):
            return error_result("mode: one of passages, facts, hybrid, graph")
        try:
            system = await self._actor(names.REGISTRY).system_config.remote()
        except Exception as e:
            cause = unwrap_error(e)
            return error_result(f"the system's registry did not answer: {type(cause).__name__}: {cause}")
        existing = list(((system or {}).get("facts") or {}).get("namespaces") or {})
        if not existing:
            return error_result("the system has no facts service")
        try:
            wanted = facts_namespaces(record, existing, arguments.get("namespaces"))
        except ValueError as e:
            return error_result(str(e))
        app = names.facts_app_name(self.system)

        # Through the ingress, which knows where each namespace's shard runs (colocate or not).
        ingress = serve.get_deployment_handle(names.FACTS_INGRESS_DEPLOYMENT, app_name=app)

        async def search(namespace: str) -> Any:
            return await ingress.search_namespace.remote(
                namespace, query, k=k, mode=mode, as_of=None, depth=1, filters=None
            )

        try:
            results = await asyncio.gather(*(search(n) for n in wanted))
        except Exception as e:
            cause = unwrap_error(e)
            return error_result(f"the facts search failed: {type(cause).__name__}: {cause}")
        facts = sorted((f for r in results for f in r.facts), key=lambda h: -h.score)[:k]
        passages = sorted((p for r in results for p in r.passages), key=lambda h: -h.score)[:k]
        out = {
            "facts": [
                {"namespace": h.namespace, "sentence": h.fact.sentence, "score": h.score} for h in facts
            ],
            "passages": [
                {"namespace": p.namespace, "title": p.title, "text": p.text, "score": p.score}
                for p in passages
            ],
        }
        return call_result(out, None)

    async def _recall_memory(self, arguments: dict[str, Any], record: KeyRecord | None) -> dict[str, Any]:
        query, k, swarm = arguments.get("query"), arguments.get("k", 5), arguments.get("swarm")
        if not isinstance(query, str) or not query.strip():
            return error_result("query: a non-empty string is required")
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            return error_result(f"k: an integer from 1 to {MAX_K} is required")
        store = "global" if swarm in (None, "global") else swarm
        if not isinstance(store, str) or (record is not None and not matches_any(record.swarms, store)):
            return error_result(f"this key may not use the memory of {store!r}")
        try:
            memory = self._actor(names.memory(store))
        except ValueError:
            return error_result(f"no memory store {store!r}")
        try:
            hits = await memory.search.remote(query, k)
        except Exception as e:
            cause = unwrap_error(e)
            return error_result(f"the memory search failed: {type(cause).__name__}: {cause}")
        try:
            out = [
                {"id": h["record"]["id"], "text": h["record"]["text"], "score": h.get("score")} for h in hits
            ]
        except (KeyError, TypeError) as e:
            return error_result(f"the memory answered a malformed hit: {type(e).__name__}: {e}")
        return call_result({"records": out}, None)

    # -- the federation's resources, prompts and completions --------------------------------

    async def federation(self, method: str, *args: Any) -> Any:
        """`method` of the federation actor, or None when re-export is off or no federation runs."""
        if not self.config.reexport:
            return None
        try:
            actor = self._actor(names.MCP_FEDERATION)
        except ValueError:
            return None
        return await getattr(actor, method).remote(*args)

    async def _prefixes(self, record: KeyRecord | None) -> set[str] | None:
        """The capability prefixes of the tools `record` may use (None: no key, everything)."""
        if record is None:
            return None
        return {
            t.name.rsplit(".", 1)[0]
            for t in (await self.tools()).values()
            if not t.builtin and visible(record, t)
        }

    async def resources(self, record: KeyRecord | None) -> dict[str, Any] | None:
        """The federated resources of the servers whose capabilities `record` may use."""
        found = await self.federation("list_resources")
        prefixes = await self._prefixes(record)
        if found is None or prefixes is None:
            return found
        return {"resources": [r for r in found.get("resources", []) if _under(r.get("name", ""), prefixes)]}

    async def prompts(self, record: KeyRecord | None) -> dict[str, Any] | None:
        """The federated prompts of the servers whose capabilities `record` may use."""
        found = await self.federation("list_prompts")
        prefixes = await self._prefixes(record)
        if found is None or prefixes is None:
            return found
        return {"prompts": [p for p in found.get("prompts", []) if _under(p.get("name", ""), prefixes)]}

    async def may_read(self, uri: str, record: KeyRecord | None) -> bool:
        if record is None:
            return True
        listed = await _passed(self.resources(record))
        return any(r.get("uri") == uri for r in (listed or {}).get("resources", []))

    async def may_prompt(self, name: str, record: KeyRecord | None) -> bool:
        prefixes = await self._prefixes(record)
        return prefixes is None or _under(name, prefixes)


def _under(name: str, prefixes: set[str]) -> bool:
    # A federated name is '<prefix>.<name>'; a resource's own name may hold dots, so match prefixes.
    return any(name.startswith(p + ".") for p in prefixes)


def _state(ctx: Any) -> dict[str, Any]:
    # What the ingress put in the request's ASGI scope: the key, the trace context.
    request = getattr(ctx, "request", None)
    return getattr(request, "scope", {}).get("state", {}) if request is not None else {}


def _key(ctx: Any) -> KeyRecord | None:
    # The guard middleware put the request's key in the ASGI scope's state (None: auth off).
    return _state(ctx).get("key")


def build_server(backend: McpBackend) -> Any:
    """The SDK's low-level `Server` over `backend`, built in the replica (Serve pickles the
    ingress, and a Server holds locks and handlers that should not travel)."""
    from mcp.server.lowlevel import Server

    async def on_list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        tools = await backend.list_tools(_key(ctx))
        return types.ListToolsResult.model_validate({"tools": tools})

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        record = _key(ctx)
        tool = await backend.find(params.name, record)
        out = await backend.call(ctx, tool, dict(params.arguments or {}), record)
        return types.CallToolResult.model_validate(out)

    async def on_list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        found = await backend.resources(_key(ctx))
        return types.ListResourcesResult.model_validate(found or {"resources": []})

    async def on_read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        found = None  # a resource of a server the key may not use reads as one that does not exist
        if await backend.may_read(str(params.uri), _key(ctx)):
            found = await _passed(backend.federation("read_resource", str(params.uri)))
        if found is None:
            raise MCPError(
                types.INVALID_PARAMS, f"Resource not found: {params.uri}", {"uri": str(params.uri)}
            )
        return types.ReadResourceResult.model_validate(found)

    async def on_list_resource_templates(ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
        # The federation re-exports listed resources only, not templates: none to list.
        return types.ListResourceTemplatesResult(resource_templates=[])

    async def on_set_logging_level(ctx: Any, params: Any) -> types.EmptyResult:
        # 2025-11-25 clients set it; the server sends no log messages, so any level is honoured.
        return types.EmptyResult()

    async def on_list_prompts(ctx: Any, params: Any) -> types.ListPromptsResult:
        found = await backend.prompts(_key(ctx))
        return types.ListPromptsResult.model_validate(found or {"prompts": []})

    async def on_get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        found = None
        if await backend.may_prompt(params.name, _key(ctx)):
            found = await _passed(backend.federation("get_prompt", params.name, dict(params.arguments or {})))
        if found is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name}")
        return types.GetPromptResult.model_validate(found)

    async def on_completion(ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
        # The federation's signature: (ref, argument, context_arguments), each plain JSON.
        ref = params.ref.model_dump(mode="json", by_alias=True, exclude_none=True)
        argument = params.argument.model_dump(mode="json", by_alias=True, exclude_none=True)
        context = dict(params.context.arguments or {}) if params.context is not None else None
        record = _key(ctx)
        if ref.get("type") == "ref/prompt":
            allowed = await backend.may_prompt(ref.get("name", ""), record)
        else:  # a resource template's URI: the federation completes listed resources' URIs only
            allowed = await backend.may_read(ref.get("uri", ""), record)
        found = await _passed(backend.federation("complete", ref, argument, context)) if allowed else None
        return types.CompleteResult.model_validate(found or {"completion": {"values": []}})

    ttl_ms = int(backend.config.catalog_ttl_s * 1000)
    with warnings.catch_warnings():  # logging is deprecated at 2026-07-28, still asked for at 2025-11-25
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        return Server(
            SERVER_NAME,
            version="1",
            # A tool list depends on the caller's key: a client may reuse it for as long as the
            # replica reuses the catalog, and never share it with another key.
            cache_hints={"tools/list": CacheHint(ttl_ms=ttl_ms, scope="private")},
            on_list_resource_templates=on_list_resource_templates,
            on_set_logging_level=on_set_logging_level,
            instructions="Each swarmray capability is a tool; a call runs as a task through a queen.",
            on_list_tools=on_list_tools,
            on_call_tool=on_call_tool,
            on_list_resources=on_list_resources,
            on_read_resource=on_read_resource,
            on_list_prompts=on_list_prompts,
            on_get_prompt=on_get_prompt,
            on_completion=on_completion,
        )


async def _passed(call: Any) -> Any:
    # The federation's own refusal (an unknown resource or prompt) reads as "not found" here.
    try:
        return await call
    except MCPError:
        raise
    except Exception as e:
        log.info("mcp: the federation refused: %r", unwrap_error(e))
        return None
