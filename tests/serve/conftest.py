"""Serve on the session's Ray head, and a tiny random-weight model built by the tests."""

import pytest

from tests.conftest import free_port


@pytest.fixture(scope="session")
def serve_port(ray_head):
    """Serve's HTTP port: started here on a free port, unless an earlier test (a demo job) has
    started Serve already, on its own port."""
    from ray import serve

    from serve import AIServiceConfig
    from serve._private.service import running_http_options

    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    _, port = running_http_options(AIServiceConfig())
    yield port
    serve.shutdown()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny Llama-architecture model with random weights and a BPE tokenizer, on disk."""
    from models import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("tiny-model")))
