import pytest


@pytest.fixture(scope="module")
def head(ray_head):
    """Every cluster test runs against the session's Ray head."""
    return ray_head
