"""The one exception tree of swarmray: every error it raises on purpose, in families a caller
can catch as one (as httpx groups its exceptions).

    SwarmrayError
    ├── InputError                      bad input: fix it and ask again
    │   ├── ConfigError                 invalid configuration (file, field path, reason)
    │   ├── PayloadError                a task's payload does not fit its capability (never retried)
    │   ├── MemoryInputError            a memory write or search was refused (field, reason)
    │   ├── FactsInputError             a facts write or query was refused (field, reason)
    │   ├── RequestError                an AI-service request was refused (param, reason, code)
    │   └── ServiceURLError             a service URL this process must not send its key to
    ├── NotFoundError                   something named does not exist
    │   ├── SystemNotFoundError         no running system in the Ray namespace
    │   ├── SwarmNotFoundError          a swarm name the registry does not know
    │   ├── UnknownCapabilityError      no swarm offers a capability
    │   ├── TaskNotFoundError           a task id the queen never accepted
    │   ├── FactsNotFoundError          a document, entity or fact id the facts store lacks
    │   ├── ModelNotFoundError          a model name the AI service does not serve
    │   └── KeyNotFoundError            an API key id the key authority does not know
    ├── ConflictError                   what is running or stored cannot take the change
    │   ├── SystemConfigChangedError    `up` of a config that differs from the running system's
    │   ├── KeyStateError               a change a key's state forbids (rotating a revoked key)
    │   ├── StaleAttemptError           a step journaled by an attempt that no longer runs its task
    │   └── ServiceExposedError         auth off, but the Serve that runs listens beyond loopback
    ├── RefusedError                    the caller may not do this (now)
    │   ├── ClusterAuthError            the cluster wants a Ray token this process lacks
    │   ├── AccessDenied                a key that may not use this model or namespace (403)
    │   └── Limited                     a key over a rate limit or budget (429)
    ├── UnavailableError                cannot answer or take work now; later may do
    │   ├── ClusterUnreachableError     no Ray cluster answers at the address
    │   ├── BackpressureError           a queen's queue is full
    │   ├── BackendsUnavailableError    every backend of a model failed or has its breaker open
    │   ├── ModelOverloadedError        a model's queue is full: refused at once, retry after a hint
    │   ├── ShardUnavailableError       a facts namespace's shard is restarting (503)
    │   ├── AuditUnavailableError       an audit record cannot be written (a full disk; 503)
    │   ├── FactsReadTimeoutError       a facts read ran past its time bound (503)
    │   ├── ExtractorUnreachableError   the facts extractor deployment did not answer
    │   └── EngineError                 an inference engine cannot serve (dead, failed)
    │       ├── EngineUnavailableError  the chosen engine cannot run here (no vLLM, no GPU)
    │       └── EngineTimeoutError      a model made no progress within its timeout_s
    ├── ExecutionError                  work the system took on could not be done
        ├── SchedulingError             agents cannot be placed (e.g. infeasible resources)
        ├── DelegationError             a task cannot be routed further (hop limit, loop)
        ├── DelegationLost              a followed task was lost where it went, none took it
        ├── ExtractionError             a model could not read entities and facts from a text
        └── TaskError                   a task ended without a result
            ├── TaskFailedError         the agent raised on every attempt
            ├── TaskTimeoutError        the last attempt ran past its timeout
            └── TaskCancelledError      the task was cancelled
    └── McpError                        a federated MCP tool could not be called
        ├── McpUnknownToolError         no approved upstream tool is this one (also a PayloadError)
        ├── McpToolHeldError            changed, held until `swarm mcp approve` (a PayloadError too)
        ├── McpPinMismatchError         `approve --hash` named another definition (a PayloadError too)
        ├── McpUpstreamError            every upstream tried failed or has its breaker open
        └── McpDeadlineError            the call ran past its deadline

Every class carries the values that explain it, so handlers need not parse messages. The
families add no behaviour: a class that is also a ValueError or LookupError stays one, and the
families themselves are neither.
"""

from __future__ import annotations

import math

__all__ = [
    "AccessDenied",
    "AuditUnavailableError",
    "BackendsUnavailableError",
    "BackpressureError",
    "ClusterAuthError",
    "ClusterUnreachableError",
    "ConfigError",
    "ConflictError",
    "DelegationError",
    "DelegationLost",
    "EngineError",
    "EngineTimeoutError",
    "EngineUnavailableError",
    "ExecutionError",
    "ExtractionError",
    "ExtractorUnreachableError",
    "FactsInputError",
    "FactsNotFoundError",
    "FactsReadTimeoutError",
    "FactsStoreBusyError",
    "InputError",
    "KeyNotFoundError",
    "KeyStateError",
    "Limited",
    "McpDeadlineError",
    "McpError",
    "McpPinMismatchError",
    "McpToolHeldError",
    "McpUnknownToolError",
    "McpUpstreamError",
    "MemoryInputError",
    "ModelNotFoundError",
    "ModelOverloadedError",
    "NotFoundError",
    "PayloadError",
    "RefusedError",
    "RequestError",
    "SchedulingError",
    "ServiceExposedError",
    "ServiceURLError",
    "ShardUnavailableError",
    "StaleAttemptError",
    "SwarmNotFoundError",
    "SwarmrayError",
    "SystemConfigChangedError",
    "SystemNotFoundError",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskTimeoutError",
    "UnavailableError",
    "UnknownCapabilityError",
]


class SwarmrayError(Exception):
    """Root of every error swarmray raises on purpose."""

    def __reduce__(self):
        # Ray pickles exceptions across processes; keep the constructor arguments.
        return (_rebuild, (type(self), self.__dict__, self.args))


def _rebuild(cls, state, args):
    err = Exception.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


# -- bad input ------------------------------------------------------------------------------------


class InputError(SwarmrayError):
    """Raised for bad input: a configuration, payload or request to fix before asking again."""


class ConfigError(InputError):
    """Raised when a configuration file or object is invalid."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"{source}: invalid configuration"]
        lines += [f"  {path or '<root>'}: {reason}" for path, reason in problems]
        super().__init__("\n".join(lines))


class PayloadError(InputError, ValueError):
    """Raised when a task's payload does not fit its capability.

    A permanent failure: the queen refuses the task at submit or fails it after one attempt,
    never retrying it."""

    def __init__(self, capability: str, problems: list[tuple[str, str]]):
        self.capability = capability
        self.problems = problems
        where = "; ".join(f"{field}: {reason}" if field else reason for field, reason in problems)
        super().__init__(f"invalid payload for {capability!r}: {where}")


class MemoryInputError(InputError, ValueError):
    """Raised when a memory operation is refused for bad input; nothing was changed."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class FactsInputError(InputError, ValueError):
    """Raised when a facts-store write or query is refused for bad input; nothing was changed."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class RequestError(InputError, ValueError):
    """Raised when an AI-service request is refused for bad input (HTTP 400)."""

    def __init__(self, param: str | None, reason: str, code: str = "invalid_request"):
        self.param = param
        self.reason = reason
        self.code = code
        super().__init__(f"{param}: {reason}" if param else reason)


class ServiceURLError(InputError):
    """Raised by a driver before it sends a key to a service URL it must not: the cluster's own
    loopback seen from outside the cluster, or plain HTTP to another machine."""

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason
        super().__init__(f"not sending the key to {url}: {reason}")


# -- not found ------------------------------------------------------------------------------------


class NotFoundError(SwarmrayError):
    """Raised when something named (a system, swarm, task, model, key, fact) does not exist."""


class SystemNotFoundError(NotFoundError):
    """Raised when no swarmray system runs in the Ray namespace."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        super().__init__(f"no swarmray system in Ray namespace {namespace!r}; run `swarm up` first")


class SwarmNotFoundError(NotFoundError):
    """Raised when a swarm name is not registered."""

    def __init__(self, swarm: str, known: list[str]):
        self.swarm = swarm
        self.known = known
        super().__init__(f"unknown swarm {swarm!r}; known swarms: {sorted(known)}")


class UnknownCapabilityError(NotFoundError):
    """Raised when no swarm offers the capability a task needs."""

    def __init__(self, capability: str, known: list[str]):
        self.capability = capability
        self.known = known
        super().__init__(f"no swarm offers capability {capability!r}; offered: {sorted(known)}")


class TaskNotFoundError(NotFoundError):
    """Raised when a task id is unknown to the queen asked."""

    def __init__(self, task_id: str, swarm: str | None, known: list[str] | None = None):
        self.task_id = task_id
        self.swarm = swarm
        if swarm is not None:
            super().__init__(f"swarm {swarm!r} has no task {task_id!r}")
        else:  # no swarm of the system could have accepted it
            super().__init__(
                f"{task_id!r} is not a task id of this system: ids look like '<swarm>:<hex>', as "
                f"`swarm submit` prints them, and its swarms are {sorted(known or [])}"
            )


class FactsNotFoundError(NotFoundError, LookupError):
    """Raised when a document, entity or fact id is not in the namespace's facts store."""

    def __init__(self, kind: str, id: str):
        self.kind = kind
        self.id = id
        super().__init__(f"no {kind} {id!r} in this namespace")


class ModelNotFoundError(NotFoundError, LookupError):
    """Raised when a request names a model the AI service does not serve (HTTP 404)."""

    def __init__(self, model: str, known: list[str]):
        self.model = model
        self.known = known
        super().__init__(f"the model {model!r} does not exist; served models: {sorted(known)}")


class KeyNotFoundError(NotFoundError, LookupError):
    """Raised when the key authority has no key of this id."""

    def __init__(self, key_id: str):
        super().__init__(f"no key has the id {key_id!r}")
        self.key_id = key_id


# -- conflicts ------------------------------------------------------------------------------------


class ConflictError(SwarmrayError):
    """Raised when what runs or is stored cannot take the change asked for."""


class SystemConfigChangedError(ConflictError):
    """Raised by `up` when the namespace runs a system of a different configuration."""

    def __init__(self, namespace: str, changes: list[str]):
        self.namespace = namespace
        self.changes = changes
        super().__init__(
            f"system {namespace!r} already runs with a different configuration ({'; '.join(changes)}); "
            "to apply the new one, `swarm down` first (tasks in flight are lost with their journals)"
        )


class KeyStateError(ConflictError, ValueError):
    """Raised when a key cannot take a change in its state (rotating a revoked key)."""


class StaleAttemptError(ConflictError):
    """Raised by a queen asked to journal a step for an attempt of a task that is not the one
    running it now (it timed out, was retried, or the task ended)."""

    def __init__(self, task_id: str, attempt: int, reason: str):
        self.task_id = task_id
        self.attempt = attempt
        self.reason = reason
        super().__init__(f"attempt {attempt} of task {task_id!r} may not journal steps: {reason}")


class ServiceExposedError(ConflictError):
    """Raised by `up` and `deploy` when a service's auth is off but the Serve that runs (started
    before, by someone else) listens beyond loopback: the service would be open to the network."""

    def __init__(self, service: str, host: str | None, port: int):
        self.service = service
        self.host = host
        self.port = port
        where = f"{host}:{port}" if host is not None else f"port {port} with its host unset"
        super().__init__(
            f"auth is off for the {service} service, but the Serve that runs on this cluster listens "
            f"on {where}, not on loopback: anyone who reaches it could use the service; turn auth "
            "on, or run this cluster's Serve on 127.0.0.1"
        )


# -- refusals -------------------------------------------------------------------------------------


class RefusedError(SwarmrayError):
    """Raised when the caller may not do this: its credentials, permissions or limits."""


class ClusterAuthError(RefusedError):
    """Raised when a Ray cluster turns this process away for its token (Ray's token auth).

    The process has none, or not the cluster's; `token_source` says where the one it sent came
    from."""

    def __init__(self, address: str, token_source: str | None):
        self.address = address
        self.token_source = token_source
        why = (
            f"the token from {token_source} is not its token"
            if token_source
            else "none is set (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)"
        )
        super().__init__(
            f"the Ray cluster at {address} wants its authentication token and {why}; "
            "`ray get-auth-token` on its head prints it"
        )


class AccessDenied(RefusedError):
    """Raised when a key may not do what a request asks (403)."""


class Limited(RefusedError):
    """Raised when a key is over one of its limits (429).

    `code` is rate_limit_exceeded for a per-minute limit, insufficient_quota for a budget."""

    _WHAT = {
        "requests": "requests per minute",
        "tokens": "tokens per minute",
        "budget": "token budget",
        "cost": "cost budget",
    }

    def __init__(self, counter: str, retry_after_s: float):
        what = self._WHAT[counter]
        if math.isinf(retry_after_s):  # asks for more than the whole limit: retrying cannot help
            super().__init__(f"this request's worst case is more than the key's whole {what}")
            self.retry_after_s: float | None = None
        else:
            super().__init__(f"this key is over its {what}; retry after {math.ceil(retry_after_s)} s")
            self.retry_after_s = retry_after_s
        self.code = "insufficient_quota" if "budget" in what else "rate_limit_exceeded"


# -- unavailable ----------------------------------------------------------------------------------


class UnavailableError(SwarmrayError):
    """Raised when something cannot answer or take work now; later it may."""


class ClusterUnreachableError(UnavailableError):
    """Raised when no Ray cluster answers at the address given (or found)."""

    START_ONE = "start one with `swarm up` (or `ray start --head`), or pass --address"

    def __init__(self, address: str, reason: str, hint: str = START_ONE):
        self.address = address
        self.reason = reason
        super().__init__(f"cannot reach a Ray cluster at {address}: {reason}; {hint}")


class BackpressureError(UnavailableError):
    """Raised by `submit` when a queen's queue is full; retry later."""

    def __init__(self, swarm: str, queued: int, max_queued: int):
        self.swarm = swarm
        self.queued = queued
        self.max_queued = max_queued
        super().__init__(
            f"swarm {swarm!r} is full: {queued} tasks queued, max_queued_tasks is "
            f"{max_queued}; retry later or raise the limit"
        )


class BackendsUnavailableError(UnavailableError):
    """Raised when no backend of a model could serve a request (HTTP 503)."""

    def __init__(self, model: str, tried: list[str], last: str):
        self.model = model
        self.tried = tried
        self.last = last
        super().__init__(f"no backend could serve {model!r}: tried {tried}; last error: {last}")


class ModelOverloadedError(UnavailableError):
    """Raised when a model's queue is full (`max_queued_requests` requests wait for its engine's
    batch): the request is refused at once, before any work (HTTP 503 with Retry-After). The
    backend is busy, not failing: no breaker counts it and no fallback is tried."""

    def __init__(self, model: str, queued: int, max_queued: int, retry_after_s: float | None = None):
        self.model = model
        self.queued = queued
        self.max_queued = max_queued
        self.retry_after_s = retry_after_s
        retry = f"; retry after {math.ceil(retry_after_s)} s" if retry_after_s is not None else ""
        super().__init__(
            f"the model {model!r} is busy: {queued} requests wait for it (max_queued_requests is "
            f"{max_queued}){retry}"
        )


class ShardUnavailableError(UnavailableError):
    """Raised when a facts namespace's shard cannot answer now (its replica died and Serve is
    starting another): HTTP 503."""


class AuditUnavailableError(UnavailableError):
    """Raised when an audit record cannot be written (a full or failing disk): a write that
    needs its record is refused (HTTP 503); `unrecorded` counts what the chain lost so far."""

    def __init__(self, path: str, unrecorded: int, cause: str):
        self.path, self.unrecorded = path, unrecorded
        super().__init__(
            f"the audit log {path} cannot be written ({cause}); {unrecorded} records lost so far"
        )


class FactsStoreBusyError(UnavailableError):
    """Raised when a facts store stays held by another process (a replica that still shuts down,
    or another writer) past the wait: a namespace has one writer."""

    def __init__(self, path: str, waited_s: float):
        self.path = path
        super().__init__(f"the facts store {path} is held by another process (waited {waited_s:g} s)")


class FactsReadTimeoutError(UnavailableError):
    """Raised when a read of a facts store runs past its time bound (`read_timeout_s`): it is
    stopped so that it holds nothing longer (HTTP 503); a narrower read may succeed."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        super().__init__(f"the read took over {timeout_s} s and was stopped; ask for less (a limit, a depth)")


class ExtractorUnreachableError(UnavailableError):
    """Raised when the facts extractor deployment did not answer (a replica restarting): the
    documents wait."""

    transient = True


class EngineError(UnavailableError):
    """Raised when an inference engine cannot serve: it failed or is dead."""


class EngineUnavailableError(EngineError):
    """Raised when the configured engine cannot run on this machine."""


class EngineTimeoutError(EngineError):
    """Raised when a model made no progress within its `timeout_s`: its engine took the request
    into its batch and did not answer in time, or it answered no request at all while this one
    waited (a stalled engine, a deployment whose replica is gone). A backend failure, which
    falls back; a busy model that keeps answering others is not one."""

    def __init__(self, model: str, timeout_s: float, what: str):
        self.model = model
        self.timeout_s = timeout_s
        super().__init__(f"the model {model!r} {what} within timeout_s ({timeout_s:g} s)")


# -- work that could not be done ------------------------------------------------------------------


class ExecutionError(SwarmrayError):
    """Raised when work the system took on could not be done: placing, routing, reading, a task."""


class SchedulingError(ExecutionError):
    """Raised when agents cannot be placed on the cluster."""


class DelegationError(ExecutionError):
    """Raised when a task cannot be delegated further."""

    def __init__(self, capability: str, reason: str, visited: list[str]):
        self.capability = capability
        self.reason = reason
        self.visited = visited
        super().__init__(f"cannot delegate capability {capability!r}: {reason} (visited: {visited})")


class DelegationLost(ExecutionError):
    """Raised when a followed task cannot end where it went: its swarm lost it (or was lost) and
    no other swarm could take it, or its swarm failed to report it."""

    def __init__(self, reason: str, cause: BaseException):
        detail = f"; {cause}" if isinstance(cause, SwarmrayError) else f": {type(cause).__name__}: {cause}"
        super().__init__(reason + detail)
        self.error_type = type(cause).__name__


class ExtractionError(ExecutionError):
    """Raised when a model-backed extractor gets no usable entities and facts for a text.

    The AI service failed (its HTTP status and message) or kept answering what the schema
    refuses. The facts store marks the document failed with this message, unless the failure is
    `transient` (the service unreachable, overloaded or failing: 408, 429, 5xx), when the
    document waits and is tried again."""

    def __init__(self, model: str, reason: str, status: int | None = None, transient: bool = False):
        self.model = model
        self.reason = reason
        self.status = status
        self.transient = transient
        super().__init__(f"extraction with model {model!r} failed: {reason}")


class TaskError(ExecutionError):
    """Raised when a task ended without a result."""

    def __init__(self, task_id: str, message: str):
        self.task_id = task_id
        super().__init__(f"task {task_id}: {message}")


class TaskFailedError(TaskError):
    """Raised when the agent raised on the task's last attempt."""


class TaskTimeoutError(TaskError):
    """Raised when the task's last attempt ran past its timeout."""


class TaskCancelledError(TaskError):
    """Raised when the task was cancelled before it finished."""


# -- federated MCP tools --------------------------------------------------------------------------


class McpError(SwarmrayError):
    """Raised when a federated MCP tool could not be called (the family of the four below)."""


class McpUnknownToolError(McpError, PayloadError):
    """Raised when a capability names no tool an upstream offers (or none approved yet).

    A PayloadError too: the queen never retries it, as every agent would answer the same."""

    def __init__(self, capability: str, reason: str = "no federated MCP tool has this name"):
        PayloadError.__init__(self, capability, [("", reason)])
        self.reason = reason


class McpToolHeldError(McpError, PayloadError):
    """Raised when an upstream changed a pinned tool's definition (or a `manual` upstream's tool
    awaits its first approval): the tool is held back until `swarm mcp approve`. Never retried."""

    def __init__(self, capability: str, server: str, pinned: str | None, current: str):
        self.server = server
        self.pinned = pinned
        self.current = current
        why = (
            f"its definition on {server!r} changed (pinned {pinned[:12]}, now {current[:12]})"
            if pinned
            else f"{server!r} requires approval before first use"
        )
        PayloadError.__init__(self, capability, [("", f"{why}; run `swarm mcp approve {server}`")])


class McpPinMismatchError(McpError, PayloadError):
    """Raised when `swarm mcp approve --hash H` names a definition other than the tool's current
    one: nothing is pinned (the definition changed since it was reviewed)."""

    def __init__(self, capability: str, server: str, expected: str, current: str):
        self.server = server
        self.expected = expected
        self.current = current
        PayloadError.__init__(
            self,
            capability,
            [("", f"the current definition on {server!r} ({current[:12]}) differs from {expected[:12]}")],
        )


class McpUpstreamError(McpError):
    """Raised when no upstream could answer a call: each tried one failed, or every breaker is
    open. `failures` pairs each server with its reason, in the order tried."""

    def __init__(self, capability: str, failures: list[tuple[str, str]]):
        self.capability = capability
        self.failures = failures
        tried = "; ".join(f"{server}: {reason}" for server, reason in failures) or "no upstream"
        super().__init__(f"no MCP upstream answered {capability!r}: {tried}")


class McpDeadlineError(McpError):
    """Raised when a federated call ran past its deadline (on `server`, after `deadline_s`)."""

    def __init__(self, capability: str, server: str, deadline_s: float):
        self.capability = capability
        self.server = server
        self.deadline_s = deadline_s
        super().__init__(f"{capability!r} on {server!r} did not answer within {deadline_s:g} s")
