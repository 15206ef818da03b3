import pytest


@pytest.fixture(autouse=True)
def _no_ray():
    """Unit tests must not start Ray; this fails any that does."""
    import ray

    before = ray.is_initialized()
    yield
    assert before or not ray.is_initialized(), "a unit test started Ray"
