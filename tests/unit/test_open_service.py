"""Auth off is allowed only while the Serve that really runs listens on loopback (issue 26, item 7):
the decision on Ray's own HTTPOptions, as Serve's controller holds them."""

import pytest
from ray.serve.config import HTTPOptions

from models._private.core.errors import ConflictError, ServiceExposedError
from serve import AIServiceConfig, FactsServiceConfig
from serve._private.service import check_serve_listening

OFF = {"auth": {"enabled": False}}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", None])
def test_auth_off_is_refused_when_the_running_serve_listens_beyond_loopback(host):
    # The config says 127.0.0.1, but Serve was started by someone else: what runs decides.
    config = AIServiceConfig(**OFF)
    with pytest.raises(ServiceExposedError) as refused:
        check_serve_listening(config, HTTPOptions(host=host, port=8000), "ai")
    assert isinstance(refused.value, ConflictError)
    assert refused.value.service == "ai" and refused.value.host == host
    assert "auth is off for the ai service" in str(refused.value)
    assert f"{host}:8000" in str(refused.value) or host is None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_auth_off_is_allowed_while_the_running_serve_listens_on_loopback(host):
    check_serve_listening(FactsServiceConfig(**OFF), HTTPOptions(host=host, port=8000), "facts")


def test_auth_on_is_fine_wherever_serve_listens():
    check_serve_listening(AIServiceConfig(), HTTPOptions(host="0.0.0.0", port=8000), "ai")
