"""Serve on the session's Ray head, and a tiny random-weight model built by the tests."""

import pytest

from tests.conftest import free_port


@pytest.fixture(scope="session")
def serve_port(ray_head):
    """Serve's HTTP proxy, started once per session on a free port."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny Llama-architecture model with random weights and a BPE tokenizer, on disk."""
    from models import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("tiny-model")))
