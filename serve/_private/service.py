"""Building and deploying the AI service as one Serve application."""

from __future__ import annotations

from typing import Any

from serve._private.config import AIServiceConfig

__all__ = ["build_app", "deploy", "service_url"]


def build_app(config: AIServiceConfig) -> Any:
    """The Serve application: a gateway bound to one deployment per model and the embedder."""
    from serve._private.deployments import embedding_app, model_app
    from serve._private.gateway import Gateway

    models = {name: model_app(m) for name, m in config.models.items()}
    embedder = embedding_app(config.embeddings) if config.embeddings is not None else None
    return Gateway.options(num_replicas=config.ingress_replicas).bind(config.model_dump(), models, embedder)


def deploy(config: AIServiceConfig, app_name: str = "ai") -> str:
    """Starts Serve on `config`'s host and port (if it is not running) and deploys the service.

    Returns the service's base URL. Ray must be initialised (`ray.init` or `cluster.connect`).
    """
    from ray import serve

    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(build_app(config), name=app_name, route_prefix=config.route_prefix)
    return service_url(config)


def service_url(config: AIServiceConfig) -> str:
    """Where the OpenAI-compatible API listens, e.g. http://127.0.0.1:8000/v1."""
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    return f"http://{host}:{config.port}{config.route_prefix.rstrip('/')}/v1"
