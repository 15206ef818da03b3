"""Building and deploying the AI service, the facts service and the /mcp endpoint, each as one
Serve application."""

from __future__ import annotations

from typing import Any

from models._private.core import names
from models._private.core.errors import SchedulingError, ServiceExposedError
from serve._private.ai.config import AIServiceConfig
from serve._private.auth.authority import get_authority
from serve._private.auth.config import is_loopback
from serve._private.facts.config import FactsServiceConfig
from serve._private.mcp.config import McpServiceConfig

__all__ = [
    "build_app",
    "build_facts_app",
    "build_mcp_app",
    "check_serve_listening",
    "deploy",
    "deploy_all",
    "serve_http_options",
    "service_url",
    "start_serve",
]

ServiceConfig = AIServiceConfig | FactsServiceConfig | McpServiceConfig
AUTHORITY_START_S = 120.0  # a key authority that cannot be placed (its resources) fails `deploy`
SHARD_SHUTDOWN_S = 60.0  # a facts shard finishes the background step under way before it stops


def build_app(config: AIServiceConfig, system: str = "ai") -> Any:
    """The Serve application: a gateway bound to one deployment per model and the embedder."""
    from serve._private.ai.deployments import embedding_app, model_app
    from serve._private.ai.routes import Gateway

    models = {name: model_app(m) for name, m in config.models.items() if not m.colocate}
    embedder = embedding_app(config.embeddings) if config.embeddings is not None else None
    # A colocated model's engine runs in each gateway replica, which then holds its resources.
    cpus = sum(m.resources.num_cpus or 0 for m in config.models.values() if m.colocate)
    return Gateway.options(
        num_replicas=config.ingress_replicas,
        max_ongoing_requests=config.ingress_max_ongoing_requests,
        ray_actor_options={"num_cpus": cpus},
    ).bind(config.model_dump(), models, embedder, system)


def build_facts_app(config: FactsServiceConfig, system: str) -> Any:
    """The facts service: an ingress and one shard per namespace, whose data lives under
    `config.namespace_path(system, namespace)`: the shards inside the ingress's one replica
    (`config.colocated()`), else a deployment each behind stateless ingress replicas."""
    from ray import serve

    from serve._private.facts.routes import FactsGateway
    from serve._private.facts.shard import ExtractorServer, FactsShard

    llm = {"base_url": config.ai_url, "api_key_env": config.api_key_env}
    reader = None
    if any(ns.extractor == "spacy" for ns in config.namespaces.values()):
        reader = (
            serve.deployment(ExtractorServer)
            .options(
                name=names.FACTS_EXTRACTOR_DEPLOYMENT,
                num_replicas=config.extractor_replicas,
                ray_actor_options={"num_cpus": config.extractor_num_cpus},
            )
            .bind()
        )
    shard_args = {
        name: (name, ns.model_dump(), config.namespace_path(system, name), llm, reader, system)
        for name, ns in config.namespaces.items()
    }
    ingress = FactsGateway.options(
        num_replicas=config.ingress_replicas, max_ongoing_requests=config.ingress_max_ongoing_requests
    )
    if config.colocated():
        # The ingress replica holds the shards, and so their resources and their data's node.
        cpus = sum(ns.num_cpus for ns in config.namespaces.values())
        return ingress.options(
            graceful_shutdown_timeout_s=SHARD_SHUTDOWN_S,
            ray_actor_options={"num_cpus": cpus, "resources": dict(config.control_resources)},
        ).bind(config.model_dump(), {}, system, shard_args)
    shards = {
        name: serve.deployment(FactsShard)
        .options(
            name=names.facts_shard_name(name),
            num_replicas=1,  # one writer per store: the shard is the namespace's single owner
            max_ongoing_requests=1000,
            graceful_shutdown_timeout_s=SHARD_SHUTDOWN_S,
            ray_actor_options={"num_cpus": ns.num_cpus, "resources": dict(config.control_resources)},
        )
        .bind(*shard_args[name])
        for name, ns in config.namespaces.items()
    }
    return ingress.bind(config.model_dump(), shards, system)


def build_mcp_app(config: McpServiceConfig, system: str) -> Any:
    """The /mcp endpoint: stateless ingress replicas over the system's registry and queens (found
    by name in the `system` Ray namespace, so the system's swarms must run there)."""
    from serve._private.mcp.routes import McpGateway

    return McpGateway.options(
        num_replicas=config.replicas, max_ongoing_requests=config.ingress_max_ongoing_requests
    ).bind(config.model_dump(), system)


def deploy(config: ServiceConfig, app_name: str | None = None, system: str | None = None) -> str:
    """Starts Serve on `config`'s host and port (if it is not running) and deploys the service
    (the AI service, the facts service or the /mcp endpoint, by the config's kind), unless an
    application of that name runs already.

    Args:
        app_name: The Serve application's name; default "ai", "facts", or for the /mcp endpoint
            `names.mcp_app_name(system)`.
        system: The system (Ray namespace) whose key authority checks requests (auth on) and
            under which the facts service keeps its data; default the application's name.

    Returns the service's base URL. Ray must be initialised (`ray.init` or `cluster.connect`).

    Raises:
        ServiceExposedError: `config` turns auth off and the Serve that runs (perhaps started
            by someone else) listens beyond loopback; nothing is deployed.
    """
    return deploy_all([(config, app_name)], system)[0]


def deploy_all(services: list[tuple[ServiceConfig, str | None]], system: str | None = None) -> list[str]:
    """`deploy` of several services (config, application name) of one system at once: Serve
    starts every application's replicas together (`serve.run_many`) rather than one application
    after the other, and this returns when all run. Returns their base URLs, in order."""
    from ray import serve

    targets = []
    for config, app_name in services:
        facts, mcp = isinstance(config, FactsServiceConfig), isinstance(config, McpServiceConfig)
        kind = "facts" if facts else "mcp" if mcp else "ai"
        if mcp and system is None:
            raise ValueError("the /mcp endpoint needs the system (Ray namespace) whose swarms it serves")
        app_name = app_name or (names.mcp_app_name(system) if mcp else kind)
        if facts and config.needs_ai() and not config.ai_url:
            raise ValueError("a facts namespace with extractor llm needs ai_url (the AI service's …/v1)")
        start_serve(config, kind)
        running = serve.status().applications.get(app_name)
        # Like the system's actors, a running service is kept (no replica restarts on a second
        # `up`); change it with `down` then `up`.
        if running is not None and running.status in ("RUNNING", "DEPLOYING"):
            continue
        # Up before the gateways: it checks keys (auth on) and keeps the usage ledger (always).
        authority = _started_authority(system or app_name, config)
        if kind == "ai":  # what a new key's model list may name
            import ray

            ray.get(authority.set_served_models.remote(config.model_names()))
        if facts:
            app = build_facts_app(config, system or app_name)
        elif mcp:
            app = build_mcp_app(config, system)
        else:
            app = build_app(config, system or app_name)
        targets.append(serve.RunTarget(target=app, name=app_name, route_prefix=config.route_prefix))
    if targets:
        serve.run_many(targets, wait_for_applications_running=True)
    return [service_url(config) for config, _ in services]


def _started_authority(system: str, config: ServiceConfig) -> Any:
    """The system's key authority, once it answers."""
    import ray

    authority = get_authority(system, config.auth, config.control_resources)
    try:
        ray.get(authority.list.remote(), timeout=AUTHORITY_START_S)
    except ray.exceptions.GetTimeoutError:
        raise SchedulingError(
            f"the key authority did not start within {AUTHORITY_START_S:g} s; it needs "
            f"{dict(config.control_resources) or 'no custom resources'} on some node"
        ) from None
    return authority


def start_serve(config: ServiceConfig, service: str) -> Any:
    """Starts Serve on `config`'s host and port unless it runs already, and returns the HTTP
    options it really runs with (Ray's `HTTPOptions`), which are those of whoever started it.

    Raises:
        ServiceExposedError: `config` turns auth off and that Serve listens beyond loopback.
    """
    from ray import serve

    serve.start(http_options={"host": config.host, "port": config.port})
    http = serve_http_options()
    check_serve_listening(config, http, service)
    return http


def serve_http_options() -> Any:
    """Serve's HTTP options (Ray's `HTTPOptions`) as its controller holds them: where its proxies
    listen on every node; None when Serve does not run. Works through Ray Client too."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return None
    return ray.get(controller.get_http_config.remote())


def check_serve_listening(config: ServiceConfig, http: Any, service: str) -> None:
    """Auth may be off only while the Serve that runs listens on loopback: a config's own host is
    not enough, since `serve.start` keeps the options of a Serve already running (another system,
    a RayService, `serve start`). `http` is Ray's `HTTPOptions`; None (no Serve) is refused too.

    Raises:
        ServiceExposedError: auth is off and `http.host` is not a loopback host.
    """
    if config.auth.enabled:
        return
    if http is None:
        raise ServiceExposedError(service, None, config.port)
    if not is_loopback(http.host):
        raise ServiceExposedError(service, http.host, int(http.port))


def running_http_options(config: ServiceConfig) -> tuple[str, int]:
    """Host and port of the Serve HTTP proxy that runs now.

    Serve's HTTP options are cluster-wide and set by whoever started Serve first; a later
    `serve.start` with other options does not change them. Serve has no public call for them,
    so this asks its controller (`serve_http_options`), falling back to the configured values.
    """
    try:
        http = serve_http_options()
    except Exception:  # no Ray to ask: the configured values are all there is
        http = None
    if http is None:
        return config.host, config.port
    return http.host, int(http.port)


def service_url(config: ServiceConfig) -> str:
    """Where a service's API listens, e.g. http://127.0.0.1:8000/v1 (the AI service),
    http://127.0.0.1:8000/facts/v1, or http://127.0.0.1:8000/mcp (the /mcp endpoint)."""
    host, port = running_http_options(config)
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if isinstance(config, McpServiceConfig):
        return f"http://{host}:{port}{config.route_prefix.rstrip('/') or '/'}"
    return f"http://{host}:{port}{config.route_prefix.rstrip('/')}/v1"
