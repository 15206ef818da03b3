"""Names of the system's actors inside its Ray namespace: the one place that spells them."""

REGISTRY = "registry"


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
