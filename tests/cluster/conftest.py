import sys
from pathlib import Path

import psutil
import pytest
from ray._common.utils import get_ray_address_file
from ray._private.services import find_gcs_addresses

from tests.conftest import ROOT
from tests.waiting import wait_until

VENV_BIN = ROOT / ".venv" / "bin"


@pytest.fixture(scope="module")
def head(ray_head):
    """Every cluster test runs against the session's Ray head."""
    return ray_head


@pytest.fixture
def machine():
    """Skips unless the machine runs no Ray; afterwards puts back Ray's address file as it was
    (each `ray start` rewrites it) and checks that no Ray process is left."""
    if find_gcs_addresses():  # Ray's own scan (`ray status` waits ~40 s on an address left behind)
        pytest.skip("a Ray instance is already running on this machine")
    if Path(sys.executable).parent != VENV_BIN:
        pytest.skip("the README's lines use the checkout's .venv, which is not this Python")
    address_file = Path(get_ray_address_file(None))
    before = address_file.read_text() if address_file.exists() else None
    yield address_file
    if before is None:
        address_file.unlink(missing_ok=True)
    else:
        address_file.write_text(before)
    no_ray_left()


def ray_processes() -> list[str]:
    """Every process of a Ray on this machine: GCS, raylet, dashboard and its agents, monitors,
    workers (which retitle themselves `ray::…`)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        name, args = proc.info["name"] or "", " ".join(proc.info["cmdline"] or [])
        if name in ("gcs_server", "raylet") or name.startswith("ray::") or "/site-packages/ray/" in args:
            found.append(f"{proc.pid} {name} {args[:120]}")
    return found


def no_ray_left(timeout_s: float = 30.0) -> None:
    """Waits until no Ray process runs (a Ray's last processes, such as its dashboard's fork
    server, exit a moment after it is stopped); fails naming those still there."""
    left: list[str] = []

    def gone() -> bool:
        left[:] = ray_processes()
        return not left

    try:
        wait_until(gone, timeout_s, "every Ray process to exit")
    except AssertionError:
        raise AssertionError(f"Ray processes left after {timeout_s} s: {left}") from None
