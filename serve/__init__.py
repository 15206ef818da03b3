"""The two services on Ray Serve.

- The AI service: an OpenAI-compatible gateway over model deployments and remote providers,
  with aliases, fallbacks, circuit breakers and usage accounting.
- The facts service: documents, a temporal knowledge graph, hybrid and graph search over HTTP,
  one shard per namespace.
- The /mcp endpoint: every capability of the system's swarms as an MCP tool (Streamable HTTP,
  spec revisions 2026-07-28 and 2025-11-25), each call a task through a queen.

`deploy(AIServiceConfig(...))` or `deploy(FactsServiceConfig(...))` runs one, `deploy_all` several
at once; `swarm up` does so when the system config has `ai:`, `facts:` or `mcp: server:`.
`ai_app` and `facts_app` are the application builders a Serve config file names
(`serve deploy configs/serve.yaml`).
"""

from serve._private.ai.config import (
    AIServiceConfig,
    AutoscalingConfig,
    ModelConfig,
    PriceConfig,
    ProviderConfig,
)
from serve._private.apps import AIAppArgs, FactsAppArgs, ai_app, facts_app
from serve._private.facts.config import FactsNamespaceConfig, FactsServiceConfig
from serve._private.mcp.config import McpServiceConfig
from serve._private.service import build_app, build_facts_app, build_mcp_app, deploy, deploy_all, service_url

__all__ = [
    "AIAppArgs",
    "AIServiceConfig",
    "AutoscalingConfig",
    "FactsAppArgs",
    "FactsNamespaceConfig",
    "FactsServiceConfig",
    "McpServiceConfig",
    "ModelConfig",
    "PriceConfig",
    "ProviderConfig",
    "ai_app",
    "build_app",
    "build_facts_app",
    "build_mcp_app",
    "deploy",
    "deploy_all",
    "facts_app",
    "service_url",
]
