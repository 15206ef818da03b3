"""Traces across a task: swarmray's own OpenTelemetry tracer, and the W3C trace context a task
carries between processes.

A task's way is one trace: the client's `swarm.submit`, each queen's `queen.accept` (and
`queen.delegate` when it hands the task on), `task.queue_wait` and `task.attempt`, the agent's
`agent.handle`, its HTTP calls (`http.client POST <path>`, and the service's server span on the
other side) and its tool calls (`tool.call <name>`). The context crosses Ray calls as
`Task.trace` (a W3C `traceparent` carrier, journaled with the task) and HTTP as the
`traceparent` header.

swarmray keeps a `TracerProvider` of its own, never the global one: Ray's tracing hook and
Serve's tracing set the global provider for every remote call of the cluster, and either may be
on beside this. A process is configured once (`configure`); until then, and whenever tracing is
off, `span` is a shared `nullcontext` behind one module-global check and nothing of the SDK is
imported, so tracing off costs nothing measurable.

Spans go over OTLP/HTTP where an endpoint is known (`TracingConfig.endpoint`, which `swarm up`
fills from its own `OTEL_EXPORTER_OTLP_ENDPOINT`), else as JSON lines to a file per process,
`<directory>/<hostname>-<pid>.jsonl` (default directory `~/.swarmray/traces/<system>`), 0600
files in a 0700 directory (spans name tasks, agents and capabilities).
"""

from __future__ import annotations

import atexit
import os
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from pydantic import Field

from models._private.core.config import ConfigModel
from models._private.core.private_files import open_private, private_dir

__all__ = [
    "OTLP_ENDPOINT_ENV",
    "TracingConfig",
    "carrier",
    "configure",
    "enabled",
    "flush",
    "headers",
    "mark",
    "shutdown",
    "span",
]

OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"  # OpenTelemetry's own: the collector's base URL
SDK_DISABLED_ENV = "OTEL_SDK_DISABLED"  # OpenTelemetry's own: "true" turns every SDK off
TRACES_PATH = "v1/traces"  # OTLP/HTTP's path for spans under the endpoint
SCOPE = "swarmray"  # the instrumentation scope of every span


class TracingConfig(ConfigModel):
    """Whether and where a system's processes send the spans of its tasks."""

    enabled: bool = Field(False, description="Trace every task's way through the system.")
    endpoint: str | None = Field(
        None,
        description="An OTLP/HTTP collector's base URL (spans go to <endpoint>/v1/traces), e.g. "
        "http://collector:4318; None: `swarm up` takes its own OTEL_EXPORTER_OTLP_ENDPOINT, and "
        "without that spans go to files.",
    )
    directory: str | None = Field(
        None,
        description="Where each process writes its spans as JSON lines when no endpoint is known "
        "(<hostname>-<pid>.jsonl, on the process's node); None: ~/.swarmray/traces/<system>.",
    )
    sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="The share of new traces kept; a span whose parent was kept (or dropped) "
        "follows it, so a task's trace is whole or absent.",
    )

    def resolved(self, environ: Mapping[str, str] | None = None) -> TracingConfig:
        """This config with `endpoint` taken from OTEL_EXPORTER_OTLP_ENDPOINT in `environ`
        (default this process's) when unset and tracing is on: what `swarm up` hands to every
        process of the system, whose own environment may lack it."""
        environ = os.environ if environ is None else environ
        if not self.enabled or self.endpoint or not environ.get(OTLP_ENDPOINT_ENV):
            return self
        return self.model_copy(update={"endpoint": environ[OTLP_ENDPOINT_ENV]})


# The process's tracer once `configure` turned tracing on; None is off, the one check `span`,
# `carrier` and `headers` make.
_tracer: Any = None
_provider: Any = None
_propagator: Any = None
_kinds: dict[str, Any] = {}
_lock = threading.Lock()
_exit_hooked = False
_OFF: AbstractContextManager[None] = nullcontext()  # reusable and reentrant
_NO_HEADERS: Mapping[str, str] = {}


def enabled() -> bool:
    """Whether this process traces."""
    return _tracer is not None


def configure(config: TracingConfig | None, service: str, system: str) -> bool:
    """Turns tracing on in this process as `config` says, once: later calls change nothing
    (the first role a process has names its spans' service). Returns whether it traces.

    Tracing stays off when `config` is None or disabled, or OTEL_SDK_DISABLED is "true".

    Args:
        config: The system's tracing config, resolved at `swarm up`.
        service: The role of this process, for the spans' `service.name` (`swarmray.queen`).
        system: The system (Ray namespace): a resource attribute, and the default directory.
    """
    global _tracer, _provider, _propagator, _exit_hooked
    if _tracer is not None or config is None or not config.enabled:
        return _tracer is not None
    if os.environ.get(SDK_DISABLED_ENV, "").strip().lower() == "true":
        return False
    with _lock:
        if _tracer is not None:
            return True
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        resource = Resource.create(
            {
                "service.name": service,
                "service.namespace": system,
                "host.name": socket.gethostname(),
                "process.pid": os.getpid(),
            }
        )
        provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
            resource=resource,
            shutdown_on_exit=False,  # our own atexit flushes and shuts it down (below)
        )
        if config.endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            url = f"{config.endpoint.rstrip('/')}/{TRACES_PATH}"
            # In batches, off the caller's thread; flushed at `flush` and at exit.
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        else:
            directory = Path(config.directory or Path.home() / ".swarmray" / "traces" / system).expanduser()
            # Each span written as it ends: a process that Ray kills loses none it finished.
            provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(directory)))
        _kinds.update({k.name.lower(): k for k in SpanKind})
        _propagator = TraceContextTextMapPropagator()
        _provider = provider
        _tracer = provider.get_tracer(SCOPE)
        if not _exit_hooked:
            atexit.register(shutdown)
            _exit_hooked = True
    return True


def span(
    name: str,
    parent: Mapping[str, str] | None = None,
    kind: str = "internal",
    attributes: Mapping[str, Any] | None = None,
) -> AbstractContextManager[Any]:
    """A span around the block, current within it (so that spans and `carrier()` inside nest
    under it), or a shared `nullcontext` when tracing is off.

    Args:
        name: The span's name (`task.attempt`).
        parent: A carrier (`Task.trace`) to nest under; `{}` starts a new trace; None nests
            under the current span. Code that serves many tasks on one event loop passes the
            task's carrier (or `{}`), never the current span, which belongs to whatever ran last.
        kind: internal, server, client, producer or consumer.
        attributes: The span's attributes.

    Yields:
        The span (None when off).
    """
    if _tracer is None:
        return _OFF
    return _span(name, parent, kind, attributes)


@contextmanager
def _span(
    name: str, parent: Mapping[str, str] | None, kind: str, attributes: Mapping[str, Any] | None
) -> Iterator[Any]:
    context = None if parent is None else _propagator.extract(parent)
    with _tracer.start_as_current_span(
        name, context=context, kind=_kinds[kind], attributes=attributes
    ) as current:
        yield current


def mark(
    name: str,
    parent: Mapping[str, str] | None,
    start_ns: int,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """A span that began at `start_ns` (Unix ns) and ends now, under `parent` (as in `span`),
    such as a task's wait in the queue; nothing when tracing is off."""
    if _tracer is None:
        return
    context = None if parent is None else _propagator.extract(parent)
    _tracer.start_span(name, context=context, start_time=start_ns, attributes=attributes).end()


def carrier() -> dict[str, str] | None:
    """The current span's context as a W3C carrier (`{"traceparent": ...}`), for `Task.trace`;
    None when tracing is off or no span is current."""
    if _tracer is None:
        return None
    out: dict[str, str] = {}
    _propagator.inject(out)
    return out or None


def headers() -> Mapping[str, str]:
    """The current span's context as HTTP headers (`traceparent`); empty when off."""
    return carrier() or _NO_HEADERS


def flush(timeout_s: float = 5.0) -> None:
    """Sends the spans still held in batches (OTLP); at an actor's stop, and at exit."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


def shutdown() -> None:
    """Sends the spans still held and turns tracing off in this process, until `configure`
    turns it on again: at exit, and for tests."""
    global _tracer, _provider
    with _lock:
        provider, _tracer, _provider = _provider, None, None
    if provider is not None:
        provider.shutdown()


class JsonLinesExporter:
    """Writes each span as one JSON line (`ReadableSpan.to_json`) to this process's file in
    `directory`, `<hostname>-<pid>.jsonl` (see `private_files`).

    A span exporter of the OpenTelemetry SDK (its `SpanExporter` interface), defined without
    importing the SDK so that this module stays light while tracing is off.
    """

    def __init__(self, directory: Path):
        self.path = Path(private_dir(str(directory))) / f"{socket.gethostname()}-{os.getpid()}.jsonl"
        self._file = os.fdopen(open_private(str(self.path), os.O_WRONLY | os.O_APPEND), "a", encoding="utf-8")
        self._lock = threading.Lock()  # spans end on many threads; their lines must not mix

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = "".join(s.to_json(indent=None) + "\n" for s in spans)
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            self._file.write(lines)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every export is flushed as it is written

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()
