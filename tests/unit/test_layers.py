"""Imports run one way: every module's imports, read with `ast` (no Ray, nothing imported),
must go down the layers below and never close a circle."""

from __future__ import annotations

import ast
import gc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The layer order, declared once. A module may import its own unit or a unit of a lower rank;
# `actors` and `serve` share a rank, so neither may import the other.
LAYERS = {
    "models._private.core": 0,  # what every layer needs: errors, env, config base, journal, ...
    "models": 1,  # data and ML: embedder, indexes, memory, engines
    "actors": 2,  # swarms: registry, queens, pools, agents, memory stores
    "serve": 2,  # the AI service on Ray Serve
    "cluster": 3,  # the roof: system config, bring-up, client, CLI
}


def unit_of(module: str) -> str | None:
    """The layer unit a module belongs to (the longest declared prefix), or None if outside."""
    best = None
    for unit in LAYERS:
        if (module == unit or module.startswith(unit + ".")) and (best is None or len(unit) > len(best)):
            best = unit
    return best


def project_modules(root: Path) -> dict[str, Path]:
    """Module name -> file of every Python module in the layered packages under `root`."""
    modules = {}
    for package in {unit.split(".")[0] for unit in LAYERS}:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def parse(path: Path) -> ast.Module:
    """The syntax tree of `path`, built with the collector paused: CPython 3.11 shares one AST
    depth counter per interpreter (python/cpython#106905), so a finalizer that parses while this
    tree is built makes the parse fail."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(path.read_text(), str(path))
    finally:
        if was_enabled:
            gc.enable()


def imports_of(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """The project modules that `path` imports anywhere in it (also inside functions)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from a.b import c` imports module a.b.c when there is one, else names of a.b.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            # `import a.b.c` runs a, a.b and a.b.c; the deepest project module is what it uses.
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def graph(root: Path) -> tuple[dict[str, Path], dict[str, set[str]]]:
    modules = project_modules(root)
    return modules, {m: imports_of(p, m, modules) for m, p in modules.items()}


def upward_imports(root: Path) -> list[str]:
    """One line per import that runs up a layer or sideways between peer units."""
    modules, edges = graph(root)
    problems = []
    for module, targets in sorted(edges.items()):
        here = unit_of(module)
        for target in sorted(targets):
            there = unit_of(target)
            if here is None or there is None or there == here or LAYERS[there] < LAYERS[here]:
                continue
            way = "up" if LAYERS[there] > LAYERS[here] else "sideways"
            problems.append(
                f"{modules[module].relative_to(root)} ({here}) imports {way} "
                f"{modules[target].relative_to(root)} ({there})"
            )
    return problems


def import_circles(root: Path) -> list[str]:
    """One line per circle of imports between modules (Tarjan's strongly connected components)."""
    modules, edges = graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                # Name the files of one edge that closes the circle, and everything in it.
                inside = set(component)
                a = min(component)
                b = min(t for t in edges[a] if t in inside)
                files = ", ".join(str(modules[m].relative_to(root)) for m in sorted(component))
                circles.append(
                    f"{modules[a].relative_to(root)} imports {modules[b].relative_to(root)}, "
                    f"which leads back to it; the circle: {files}"
                )

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return circles


def test_no_module_imports_up_a_layer_or_across_to_a_peer():
    assert upward_imports(ROOT) == []


def test_no_imports_form_a_circle():
    assert import_circles(ROOT) == []


def test_every_layered_package_is_found():
    modules = project_modules(ROOT)
    assert {unit_of(m) for m in modules} == set(LAYERS)
    assert "actors._private.queen.queen" in modules and "models._private.core.errors" in modules


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name in ("models", "actors", "serve", "cluster"):
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "__init__.py").write_text("")
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_an_upward_import_inside_a_function_is_reported_with_both_files(tmp_path):
    root = _tree(
        tmp_path,
        {
            "models/_private/core/errors.py": "def f():\n    from models._private.memory import x\n",
            "models/_private/memory.py": "from actors._private.queen import Q\n",
            "actors/_private/queen.py": "Q = 1\n",
        },
    )
    assert upward_imports(root) == [
        "models/_private/core/errors.py (models._private.core) imports up models/_private/memory.py (models)",
        "models/_private/memory.py (models) imports up actors/_private/queen.py (actors)",
    ]


def test_peers_may_not_import_each_other(tmp_path):
    root = _tree(
        tmp_path,
        {"actors/_private/agent.py": "import serve._private.gateway\n", "serve/_private/gateway.py": ""},
    )
    assert upward_imports(root) == [
        "actors/_private/agent.py (actors) imports sideways serve/_private/gateway.py (serve)"
    ]


def test_a_circle_within_one_package_is_reported(tmp_path):
    root = _tree(
        tmp_path,
        {
            "models/_private/engine.py": "def make():\n    from models._private.hf import E\n",
            "models/_private/hf.py": "from models._private.engine import Base\n",
        },
    )
    assert import_circles(root) == [
        "models/_private/engine.py imports models/_private/hf.py, which leads back to it; "
        "the circle: models/_private/engine.py, models/_private/hf.py"
    ]


class _ParsesWhenCollected:
    """Garbage whose finalizer parses Python, as some libraries' objects do when collected."""

    def __del__(self):
        ast.parse("x = 1")


def test_reading_imports_survives_a_collection_that_parses_in_the_middle():
    # CPython 3.11 keeps one AST depth counter per interpreter (python/cpython#106905): a parse
    # run by a finalizer while another parse builds its tree resets it, and the outer parse
    # raised "AST constructor recursion depth mismatch" (CI, 2026-11-30).
    path = ROOT / "actors" / "_private" / "agents" / "builtin.py"  # the largest module of actors
    module, modules = "actors._private.agents.builtin", project_modules(ROOT)
    threshold = gc.get_threshold()
    gc.set_threshold(50)
    try:
        for _ in range(5):
            a, b = _ParsesWhenCollected(), _ParsesWhenCollected()
            a.other, b.other = b, a
            del a, b
            assert "models._private.core.errors" in imports_of(path, module, modules)
    finally:
        gc.set_threshold(*threshold)
