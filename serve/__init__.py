"""The AI service on Ray Serve: an OpenAI-compatible gateway over model deployments and remote
providers, with aliases, fallbacks, circuit breakers and usage accounting.

`deploy(AIServiceConfig(...))` runs it; `swarm up` does so when the system config has `ai:`.
"""

from serve._private.config import AIServiceConfig, AutoscalingConfig, ModelConfig, ProviderConfig
from serve._private.service import build_app, deploy, service_url

__all__ = [
    "AIServiceConfig",
    "AutoscalingConfig",
    "ModelConfig",
    "ProviderConfig",
    "build_app",
    "deploy",
    "service_url",
]
