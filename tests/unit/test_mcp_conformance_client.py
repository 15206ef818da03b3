"""The MCP conformance suite's client scenarios against the federation's upstream client (its
HTTP transport, `http_upstream`), one suite run per spec version; the expected failures and
their reasons are in tests/conformance/client-expected-failures.yml. No Ray."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.npm_tools import node_env, npm_bin

CLIENT = ROOT / "tests" / "conformance" / "federation_client.py"
EXPECTED = ROOT / "tests" / "conformance" / "client-expected-failures.yml"


@pytest.mark.slow
@pytest.mark.parametrize("version", ["2025-11-25", "2026-07-28"])
def test_the_federation_client_passes_the_conformance_client_scenarios(version, tmp_path):
    env = node_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    run = subprocess.run(
        [
            str(npm_bin("conformance")),
            "client",
            "--command",
            f"{sys.executable} {CLIENT}",
            "--requirements",
            version,
            "--expected-failures",
            str(EXPECTED),
            "-o",
            str(tmp_path),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = run.stdout[run.stdout.find("=== SUITE SUMMARY ===") :]
    assert run.returncode == 0, f"conformance client ({version}) exited {run.returncode}:\n{summary[-6000:]}"
    assert "tools_call: 2 passed, 0 failed" in summary
