"""Every environment variable swarmray reads, in one place, as typed getters."""

from __future__ import annotations

import os

__all__ = ["cache_dir", "config_path", "log_level", "namespace", "ray_address", "verbose"]

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


def cache_dir(*parts: str) -> str:
    """XDG_CACHE_HOME (default ~/.cache) + /swarmray/<parts>: built models, cached embeddings."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "swarmray", *parts)
