"""Building and deploying the AI service as one Serve application."""

from __future__ import annotations

from typing import Any

from serve._private.config import AIServiceConfig

__all__ = ["build_app", "deploy", "service_url"]


def build_app(config: AIServiceConfig) -> Any:
    """The Serve application: a gateway bound to one deployment per model and the embedder."""
    from serve._private.deployments import embedding_app, model_app
    from serve._private.gateway import Gateway

    models = {name: model_app(m) for name, m in config.models.items() if not m.colocate}
    embedder = embedding_app(config.embeddings) if config.embeddings is not None else None
    # A colocated model's engine runs in each gateway replica, which then holds its resources.
    cpus = sum(m.resources.num_cpus or 0 for m in config.models.values() if m.colocate)
    return Gateway.options(
        num_replicas=config.ingress_replicas,
        max_ongoing_requests=config.ingress_max_ongoing_requests,
        ray_actor_options={"num_cpus": cpus},
    ).bind(config.model_dump(), models, embedder)


def deploy(config: AIServiceConfig, app_name: str = "ai") -> str:
    """Starts Serve on `config`'s host and port (if it is not running) and deploys the service,
    unless an application of that name runs already.

    Returns the service's base URL. Ray must be initialised (`ray.init` or `cluster.connect`).
    """
    from ray import serve

    serve.start(http_options={"host": config.host, "port": config.port})
    running = serve.status().applications.get(app_name)
    # Like the system's actors, a running service is kept (no replica restarts on a second
    # `up`); change it with `down` then `up`.
    if running is None or running.status not in ("RUNNING", "DEPLOYING"):
        serve.run(build_app(config), name=app_name, route_prefix=config.route_prefix)
    return service_url(config)


def running_http_options(config: AIServiceConfig) -> tuple[str, int]:
    """Host and port of the Serve HTTP proxy that runs now.

    Serve's HTTP options are cluster-wide and set by whoever started Serve first; a later
    `serve.start` with other options does not change them. Serve has no public call for them,
    so this reads its client's copy, falling back to the configured values.
    """
    try:
        from ray.serve.context import _get_global_client

        http = _get_global_client().http_config
        return http.host, int(http.port)
    except Exception:
        return config.host, config.port


def service_url(config: AIServiceConfig) -> str:
    """Where the OpenAI-compatible API listens, e.g. http://127.0.0.1:8000/v1."""
    host, port = running_http_options(config)
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{host}:{port}{config.route_prefix.rstrip('/')}/v1"
