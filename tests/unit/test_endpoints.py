"""Where a driver sends the user's key (issue 26, item 16): never to a loopback URL the cluster
published for its own processes when the driver is outside the cluster, and never over plain
HTTP to another machine unless SWARMRAY_INSECURE_HTTP=1 says so."""

import pytest
from ray.serve.config import HTTPOptions

from cluster._private.endpoints import check_key_transport, reachable_url
from cluster._private.facts_client import FactsClient
from cluster._private.security import audit_over_http
from models._private.core.errors import InputError, ServiceURLError

PUBLISHED = "http://127.0.0.1:8000/facts/v1"  # what `up` publishes for a Serve on 0.0.0.0 or 127.0.0.1


def test_a_driver_on_the_cluster_uses_the_published_url():
    assert reachable_url(PUBLISHED, None, HTTPOptions(host="127.0.0.1", port=8000)) == PUBLISHED


def test_a_remote_driver_reaches_a_serve_on_every_interface_at_the_cluster_host():
    http = HTTPOptions(host="0.0.0.0", port=8000)
    assert reachable_url(PUBLISHED, "head.example", http) == "http://head.example:8000/facts/v1"
    http = HTTPOptions(host="10.0.0.5", port=8001)
    assert reachable_url("http://10.0.0.5:8001/v1", "head.example", http) == "http://10.0.0.5:8001/v1"


def test_a_remote_driver_never_reads_the_clusters_loopback_as_its_own():
    for http in (HTTPOptions(host="127.0.0.1", port=8000), None):
        with pytest.raises(ServiceURLError, match="loopback of the cluster") as refused:
            reachable_url(PUBLISHED, "head.example", http)
        assert isinstance(refused.value, InputError) and "--url" in str(refused.value)
    with pytest.raises(ServiceURLError, match="--url"):  # remote through a ray:// we did not join
        reachable_url(PUBLISHED, "", HTTPOptions(host="0.0.0.0", port=8000))


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000/v1", "http://localhost:8000/v1", "http://[::1]:8000/v1", "https://a.example/v1"],
)
def test_a_key_goes_over_loopback_or_tls(url, monkeypatch):
    monkeypatch.delenv("SWARMRAY_INSECURE_HTTP", raising=False)
    check_key_transport(url, "sr-secret")


def test_a_key_is_not_sent_in_clear_to_another_machine_unless_opted_in(monkeypatch):
    monkeypatch.delenv("SWARMRAY_INSECURE_HTTP", raising=False)
    with pytest.raises(ServiceURLError, match="SWARMRAY_INSECURE_HTTP=1"):
        check_key_transport("http://10.0.0.5:8000/v1", "sr-secret")
    check_key_transport("http://10.0.0.5:8000/v1", None)  # no key, nothing to leak
    monkeypatch.setenv("SWARMRAY_INSECURE_HTTP", "1")
    check_key_transport("http://10.0.0.5:8000/v1", "sr-secret")


def test_the_facts_client_and_the_audit_reader_refuse_before_sending(monkeypatch):
    monkeypatch.delenv("SWARMRAY_INSECURE_HTTP", raising=False)
    # TEST-NET-1: nothing is there; a request would wait out its timeout, a refusal is at once.
    with pytest.raises(ServiceURLError):
        FactsClient("http://192.0.2.1:8000/facts/v1", api_key="sr-secret")
    with pytest.raises(ServiceURLError):
        audit_over_http("http://192.0.2.1:8000/v1", "sr-secret")
