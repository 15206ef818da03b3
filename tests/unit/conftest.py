import pytest

from tests.scripted_provider import ScriptedProvider


@pytest.fixture(autouse=True)
def _no_ray():
    """Unit tests must not start Ray; this fails any that does."""
    import ray

    before = ray.is_initialized()
    yield
    assert before or not ray.is_initialized(), "a unit test started Ray"


@pytest.fixture
def provider():
    """A scripted OpenAI-compatible service on 127.0.0.1 (tests/scripted_provider.py)."""
    p = ScriptedProvider()
    yield p
    p.close()
