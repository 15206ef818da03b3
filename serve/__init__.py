"""The two services on Ray Serve.

- The AI service: an OpenAI-compatible gateway over model deployments and remote providers,
  with aliases, fallbacks, circuit breakers and usage accounting.
- The facts service: documents, a temporal knowledge graph, hybrid and graph search over HTTP,
  one shard per namespace.

`deploy(AIServiceConfig(...))` or `deploy(FactsServiceConfig(...))` runs one; `swarm up` does
so when the system config has `ai:` or `facts:`.
"""

from serve._private.config import (
    AIServiceConfig,
    AutoscalingConfig,
    ModelConfig,
    PriceConfig,
    ProviderConfig,
)
from serve._private.facts_config import FactsNamespaceConfig, FactsServiceConfig
from serve._private.service import build_app, build_facts_app, deploy, service_url

__all__ = [
    "AIServiceConfig",
    "AutoscalingConfig",
    "FactsNamespaceConfig",
    "FactsServiceConfig",
    "ModelConfig",
    "PriceConfig",
    "ProviderConfig",
    "build_app",
    "build_facts_app",
    "deploy",
    "service_url",
]
