"""The example MCP server over Streamable HTTP in a subprocess, for `benchmarks.mcp` and the
tests that call a real HTTP upstream."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["free_port", "start_example_server"]

ROOT = Path(__file__).resolve().parents[1]
START_S = 30.0  # longest the server may take to listen


def free_port() -> int:
    """A TCP port nobody on 127.0.0.1 listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_example_server() -> tuple[subprocess.Popen, str]:
    """Starts `actors._private.mcp.example_server --http` and returns the process and its /mcp
    URL once it listens; the caller terminates it.

    Raises:
        RuntimeError: it exited or did not listen within START_S.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors._private.mcp.example_server", "--http", str(port)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"http://127.0.0.1:{port}/mcp"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the example MCP server did not start") from None
            time.sleep(0.05)  # polled: it listens within a second or two
