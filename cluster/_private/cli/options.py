"""What the commands share: the --namespace, --address and --config options, and connecting to
the system they name."""

from __future__ import annotations

from typing import Any

import click

from models._private.core import env

__all__ = ["address_option", "config_option", "connect_system", "namespace_option"]


def namespace_option(f: Any) -> Any:
    return click.option(
        "--namespace",
        "-n",
        default=None,
        help="Ray namespace of the system (default: the --config file's, $SWARMRAY_NAMESPACE, "
        "the last `swarm up`'s on this cluster, or swarmray).",
    )(f)


def address_option(f: Any) -> Any:
    return click.option(
        "--address", default=None, help="Ray cluster: 'auto', 'host:port' or 'ray://host:10001'."
    )(f)


def config_option(f: Any) -> Any:
    return click.option(
        "--config",
        "config_path",
        default=None,
        type=click.Path(dir_okay=False),
        help="System YAML (default: $SWARMRAY_CONFIG or configs/local.yaml).",
    )(f)


def connect_system(namespace: str | None, address: str | None, config_path: str | None = None) -> str:
    """Connects to the cluster; returns the system's namespace: --namespace, else the --config
    file's, else $SWARMRAY_NAMESPACE, else the one the last `swarm up` on this cluster used,
    else swarmray."""
    from cluster._private.config import load_config
    from cluster._private.connection import connect
    from cluster._private.lifecycle import last_namespace

    if not namespace and config_path:
        namespace = load_config(config_path).namespace  # applies $SWARMRAY_NAMESPACE too
    namespace = namespace or env.namespace()
    connect(address or "auto", namespace or "swarmray")
    return namespace or last_namespace() or "swarmray"
