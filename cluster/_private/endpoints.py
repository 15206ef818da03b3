"""Where a driver reaches the system's HTTP services, and when it may send them a key.

`swarm up` publishes each service's URL in the registry as the cluster's own processes reach it:
a Serve on 0.0.0.0 is published at 127.0.0.1, each node's own proxy. A driver on a node of the
cluster (an address `auto` or `host:6379`: Ray runs such drivers on a node) uses that URL as it
is. A driver outside the cluster (Ray Client, `ray://host:10001`) must not: its 127.0.0.1 is
its own machine, where anyone may listen. It reaches a Serve that listens on every interface at
the host it joined through, and one that listens on the cluster's loopback not at all (a tunnel
and `--url` do). A key goes over plain HTTP to loopback only, unless SWARMRAY_INSECURE_HTTP=1.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from models._private.core import env
from models._private.core.errors import ServiceURLError
from serve._private.auth.config import is_loopback

__all__ = ["check_key_transport", "reachable_url", "url_here"]

_EVERY_INTERFACE = ("0.0.0.0", "::", None)  # None: Serve's HAProxy binds every interface


def reachable_url(published: str, cluster_host: str | None, http: Any) -> str:
    """The URL this process reaches a service at, from the one `up` published.

    Args:
        published: The service's URL in the registry (the cluster's processes use it).
        cluster_host: None when this process runs on a node of the cluster; else the host of
            the ray:// address it joined through ("" when that is not known).
        http: Serve's HTTP options (Ray's `HTTPOptions`) as its controller holds them; None
            when they could not be read.

    Raises:
        ServiceURLError: the published URL is the cluster's loopback and this process cannot
            reach the service from outside the cluster.
    """
    if cluster_host is None:
        return published
    parts = urlsplit(published)
    if not is_loopback(parts.hostname):
        return published  # a host that names one machine for everyone
    if http is None or (http.host not in _EVERY_INTERFACE and is_loopback(http.host)):
        raise ServiceURLError(
            published,
            "that is the loopback of the cluster's node, not of this machine (joined through Ray "
            "Client), and the cluster's Serve listens there only: reach it through a tunnel and "
            "pass --url",
        )
    host = cluster_host if http.host in _EVERY_INTERFACE else http.host
    if not host:
        raise ServiceURLError(
            published, "this process joined the cluster through Ray Client at an unknown host; pass --url"
        )
    netloc = f"[{host}]" if ":" in host else host
    return parts._replace(netloc=f"{netloc}:{http.port}").geturl()


def url_here(published: str) -> str:
    """`reachable_url` for this process, connected to the cluster."""
    from cluster._private.connection import client_host

    host = client_host()
    if host is None:
        return published
    from serve._private.service import serve_http_options

    return reachable_url(published, host, serve_http_options())


def check_key_transport(url: str, key: str | None) -> None:
    """Raises ServiceURLError when `key` would go over plain HTTP to another machine, where anyone
    on the path reads it, unless SWARMRAY_INSECURE_HTTP=1 allows it. HTTPS and loopback are fine."""
    parts = urlsplit(url)
    if not key or parts.scheme != "http" or is_loopback(parts.hostname) or env.insecure_http():
        return
    raise ServiceURLError(
        url,
        "plain HTTP to another machine shows the key to anyone on the path; use https, or set "
        "SWARMRAY_INSECURE_HTTP=1 to send it anyway",
    )
