"""Every SWARMRAY_* environment variable swarmray reads, in one place, as typed getters, with
the two they fall back on (RAY_ADDRESS, XDG_CACHE_HOME). Ray's own token variables are read
where the driver connects (`cluster/_private/connection.py`), and the secrets a config names by
variable (`api_key_env`, `${VAR}`) where they are used."""

from __future__ import annotations

import os

__all__ = [
    "api_key",
    "cache_dir",
    "config_path",
    "insecure_http",
    "log_level",
    "namespace",
    "ray_address",
    "set_verbose",
    "verbose",
]

DEFAULT_CONFIG = "configs/local.yaml"


def config_path() -> str:
    """SWARMRAY_CONFIG: the system YAML used when no --config is given."""
    return os.environ.get("SWARMRAY_CONFIG", DEFAULT_CONFIG)


def namespace() -> str | None:
    """SWARMRAY_NAMESPACE: overrides the config's Ray namespace."""
    value = os.environ.get("SWARMRAY_NAMESPACE", "").strip()
    return value or None


def ray_address() -> str | None:
    """SWARMRAY_ADDRESS, else Ray's own RAY_ADDRESS: the cluster to connect to."""
    value = os.environ.get("SWARMRAY_ADDRESS") or os.environ.get("RAY_ADDRESS") or ""
    return value.strip() or None


def log_level() -> str:
    """SWARMRAY_LOG_LEVEL: log level of swarmray's own loggers (default INFO)."""
    value = os.environ.get("SWARMRAY_LOG_LEVEL", "INFO").upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError(f"SWARMRAY_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {value!r}")
    return value


def verbose() -> bool:
    """SWARMRAY_VERBOSE (set by `swarm --verbose`): show Ray's own log lines on the terminal."""
    return os.environ.get("SWARMRAY_VERBOSE", "").strip().lower() in {"1", "true", "yes"}


def set_verbose() -> None:
    """Sets SWARMRAY_VERBOSE for this process and those it starts (`swarm --verbose`)."""
    os.environ["SWARMRAY_VERBOSE"] = "1"


def api_key() -> str | None:
    """SWARMRAY_API_KEY: the user's key for the system's services (overrides the stored one)."""
    return os.environ.get("SWARMRAY_API_KEY") or None


def insecure_http() -> bool:
    """SWARMRAY_INSECURE_HTTP=1: the driver may send a key over plain HTTP to another machine
    (refused otherwise: anyone on the path reads it)."""
    return os.environ.get("SWARMRAY_INSECURE_HTTP", "").strip().lower() in {"1", "true", "yes"}


def cache_dir(*parts: str) -> str:
    """<root>/<parts>, the one rule for swarmray's local cache (built models, cached embeddings,
    the working copies of memories on a URI): the root is SWARMRAY_CACHE if set, else
    XDG_CACHE_HOME/swarmray, else ~/.cache/swarmray."""
    root = os.environ.get("SWARMRAY_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "swarmray")
    return os.path.join(root, *parts)
