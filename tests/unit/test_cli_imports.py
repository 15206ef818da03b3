"""The `swarm` command answers --help and usage errors without importing Ray (or torch, FAISS,
pydantic): each command imports those when it runs. The packages import their names lazily."""

import subprocess
import sys

import pytest

import actors
import cluster
import models
from tests.conftest import ROOT

HEAVY = {"ray", "torch", "faiss", "pydantic"}

# `python -m cluster ARGS`, in-process in a fresh interpreter, then the heavy packages it loaded.
RUN = """
import runpy, sys
sys.argv = ["swarm", *sys.argv[1:]]
try:
    runpy.run_module("cluster", run_name="__main__")
    code = 0
except SystemExit as e:
    code = e.code
print(code, sorted({{m.split(".")[0] for m in sys.modules}} & {heavy!r}))
"""


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        (["status", "--help"], 0),
        (["keys", "create", "--help"], 0),
        (["submit"], 2),  # a usage error: no CAPABILITY
        (["submit", "text.stats", "--input", "[1]"], 2),  # checked before connecting
        (["usage", "--by", "nobody"], 2),
        (["mcp", "--help"], 0),
        (["mcp", "call", "mcp.example.echo", "--input", "[1]"], 2),  # checked before connecting
    ],
)
def test_help_and_usage_errors_import_no_ray(args, code):
    proc = subprocess.run(
        [sys.executable, "-c", RUN.format(heavy=HEAVY), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.splitlines()[-1] == f"{code} []", proc.stdout + proc.stderr


def test_every_public_name_of_the_lazy_packages_resolves():
    for package in (actors, cluster, models):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
        assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        cluster.Nothing  # noqa: B018


def test_an_agent_host_starts_without_importing_the_mcp_sdk():
    # Every agent host imports `actors`; the MCP SDK and its HTTP stack cost each one about a
    # quarter of a second, which pushed a busy node's hosts past their 10 s ready timeout. Only
    # the federation's actors need them.
    sdk = "{'mcp', 'mcp_types', 'httpx2'}"
    code = (
        f"import sys, actors._private.host; print(sorted({{m.split('.')[0] for m in sys.modules}} & {sdk}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
