"""The Node tools the MCP tests use are where `tests/npm_tools` says, and run Node 22."""

import subprocess

import pytest

from tests import npm_tools


def test_node22_and_the_npm_commands_are_installed_and_run_node_22():
    node = npm_tools.node22()
    version = subprocess.run([str(node), "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("v22.")
    env = npm_tools.node_env({"PATH": "/usr/bin:/bin"})
    seen = subprocess.run(["node", "--version"], env=env, capture_output=True, text=True, check=True).stdout
    assert seen == version  # the tools' `env node` finds Node 22 first
    for name in ("conformance", "mcp-server-everything"):
        assert npm_tools.npm_bin(name).is_file()


def test_a_missing_tool_fails_the_test_naming_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(npm_tools, "NODE_MODULES", tmp_path / "node_modules")
    with pytest.raises(pytest.fail.Exception, match=r"run `npm ci --prefix tests/npm --no-audit --no-fund`"):
        npm_tools.npm_bin("conformance")
