"""Every name the system spells, in one place: its actors' names inside its Ray namespace, its
Serve applications' and deployments' names, and the HTTP headers its services add (and the one
that presents a key to them). Both
`actors` and `serve` build names here, as neither may import the other."""

import re

__all__ = [
    "BACKEND_HEADER",
    "COST_HEADER",
    "EMBEDDINGS_DEPLOYMENT",
    "FACTS_EXTRACTOR_DEPLOYMENT",
    "FACTS_INGRESS_DEPLOYMENT",
    "GATEWAY_DEPLOYMENT",
    "MCP_FEDERATION",
    "MCP_INGRESS_DEPLOYMENT",
    "REGISTRY",
    "ai_app_name",
    "authority_name",
    "bearer",
    "deployment_name",
    "facts_app_name",
    "facts_shard_name",
    "mcp_app_name",
    "mcp_stdio",
    "memory",
    "monitor",
    "owner",
    "queen",
]

# -- actors, in the system's Ray namespace ------------------------------------------------------

REGISTRY = "registry"  # the meta registry: swarms, capabilities, the system's config and KV
MCP_FEDERATION = "mcp:federation"  # the federation of remote MCP servers


def queen(swarm: str) -> str:
    """Actor name of `swarm`'s queen."""
    return f"queen:{swarm}"


def monitor(swarm: str) -> str:
    """Actor name of `swarm`'s health monitor."""
    return f"health:{swarm}"


def memory(name: str) -> str:
    """Actor name of a memory store: a swarm's, or `global`."""
    return f"memory:{name}"


def owner(actor_name: str) -> tuple[str, str] | None:
    """(kind, swarm or store name) of a queen, monitor or memory store's actor name, else None."""
    kind, sep, name = actor_name.partition(":")
    return (kind, name) if sep and kind in ("queen", "health", "memory") else None


def mcp_stdio(server: str) -> str:
    """Actor name of the actor that runs one stdio MCP upstream."""
    return f"mcp-stdio:{server}"


def authority_name(system: str) -> str:
    """Actor name of a system's key authority (the services' keys, limits and audit signing)."""
    return f"{system}-keys"


# -- Serve applications and deployments -----------------------------------------------------------


def ai_app_name(system: str) -> str:
    """The Serve application name of a system's AI service."""
    return f"{system}-ai"


def facts_app_name(system: str) -> str:
    """The Serve application name of a system's facts service."""
    return f"{system}-facts"


def mcp_app_name(system: str) -> str:
    """The Serve application name of a system's /mcp endpoint."""
    return f"{system}-mcp"


GATEWAY_DEPLOYMENT = "gateway"  # the AI service's ingress
EMBEDDINGS_DEPLOYMENT = "embeddings"  # the AI service's embedder
FACTS_INGRESS_DEPLOYMENT = "facts-ingress"  # the facts service's ingress
FACTS_EXTRACTOR_DEPLOYMENT = "facts-extractor"  # spaCy's reading of documents, for every shard
MCP_INGRESS_DEPLOYMENT = "mcp"  # the /mcp endpoint's ingress


def deployment_name(model: str) -> str:
    """A Serve deployment name for a model name (which may hold '/' or ':')."""
    return "model-" + re.sub(r"[^A-Za-z0-9_-]", "_", model)


def facts_shard_name(namespace: str) -> str:
    """The Serve deployment name of a facts namespace's shard."""
    return f"facts-shard-{namespace}"


# -- HTTP headers the services add ----------------------------------------------------------------

COST_HEADER = "x-swarmray-cost-microusd"  # what an AI-service request cost, by its price table
BACKEND_HEADER = "x-swarmray-backend"  # the AI-service backend that answered


def bearer(key: str | None) -> dict[str, str]:
    """The HTTP headers that present `key` (none without one)."""
    return {"Authorization": f"Bearer {key}"} if key else {}
