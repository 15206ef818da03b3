"""The Grafana dashboard (deploy/grafana/swarmray.json) against the metrics swarmray exports.

What is exported is read from the three metrics modules' source, never imported (no Ray): each
`PREFIX + "name"` definition with its kind and tag keys, expanded to the names Ray's metrics agent
scrapes it as (`ray_` before, `_total` after a counter, `_bucket`/`_sum`/`_count` after a
histogram). Every name a query uses must be one of those, every metric must be on a panel, and
every query must follow the dashboard's filters.
"""

from __future__ import annotations

import ast
import copy
import functools
import itertools
import json
import re
from typing import Any, NamedTuple

import pytest

from tests.conftest import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "swarmray.json"
CORE_METRICS = ROOT / "models" / "_private" / "core" / "metrics.py"
METRIC_MODULES = (
    ROOT / "actors" / "_private" / "metrics.py",
    ROOT / "serve" / "_private" / "metrics.py",
    CORE_METRICS,
)

TOP_LEVEL = {
    "annotations",
    "editable",
    "graphTooltip",
    "links",
    "panels",
    "refresh",
    "schemaVersion",
    "tags",
    "templating",
    "time",
    "timepicker",
    "timezone",
    "title",
    "uid",
    "version",
}
ROWS = ["Swarms", "Tasks", "Agents", "AI", "Facts"]
GRID_WIDTH = 24
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Ray's metrics agent puts these on every series, Serve adds its three on the services' metrics,
# Prometheus its scrape target's; a histogram's buckets carry `le`.
ADDED_LABELS = {
    *("SessionName", "WorkerId", "NodeAddress", "JobId", "Component"),
    *("application", "deployment", "replica"),
    *("instance", "job", "le"),
}
SCRAPED_SUFFIXES = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count")}
# Where `tag_keys` sits among the constructors' positional arguments (ray.util.metrics and
# ray.serve.metrics alike): (name, description, tag_keys) or (name, description, boundaries, tag_keys).
TAG_KEYS_AT = {"Counter": 2, "Gauge": 2, "Histogram": 3}

PREFIXED_LITERAL = re.compile(r'PREFIX\s*\+\s*"(\w+)"')
NAME_IN_EXPR = re.compile(r"ray_swarmray_[a-z_]+")
SELECTOR = re.compile(r"(ray_swarmray_[a-z_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class Metric(NamedTuple):
    kind: str
    tags: frozenset[str]


# ---- what the metrics modules define


def _prefix() -> str:
    found = re.search(r'^PREFIX = "(\w+)"$', CORE_METRICS.read_text(), re.MULTILINE)
    assert found, "PREFIX is no longer a plain string in models/_private/core/metrics.py"
    return found.group(1)


def _kind(call: ast.Call) -> str | None:
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    return name if name in SCRAPED_SUFFIXES else None


def _name_arg(call: ast.Call) -> ast.expr | None:
    if call.args:
        return call.args[0]
    return next((k.value for k in call.keywords if k.arg == "name"), None)


def _prefixed(node: ast.expr | None) -> ast.expr | None:
    """What follows `PREFIX +`, or None when `node` is not such a sum."""
    if (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Add)
        and isinstance(node.left, ast.Name)
        and node.left.id == "PREFIX"
    ):
        return node.right
    return None


def _tuples(tree: ast.Module) -> dict[str, list[ast.expr]]:
    """Every tuple a name is assigned in the module (`_TASK = ("system", ...)`), wherever: a
    metric's tag keys often come from one."""
    found: dict[str, list[ast.expr]] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Tuple)
        ):
            found.setdefault(node.targets[0].id, []).append(node.value)
    return found


def _strings(node: ast.expr, tuples: dict[str, list[ast.expr]], where: str) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Starred):
        return _strings(node.value, tuples, where)
    if isinstance(node, (ast.Tuple, ast.List)):
        return [s for elt in node.elts for s in _strings(elt, tuples, where)]
    if isinstance(node, ast.Name) and node.id in tuples:
        values = {tuple(_strings(v, tuples, where)) for v in tuples[node.id]}
        assert len(values) == 1, f"{where}: `{node.id}` names different tuples: {values}"
        return list(values.pop())
    raise AssertionError(f"{where}:{node.lineno}: cannot read these tag keys: {ast.unparse(node)}")


def _tag_keys(call: ast.Call, kind: str, tuples: dict[str, list[ast.expr]], where: str) -> frozenset[str]:
    node = next((k.value for k in call.keywords if k.arg == "tag_keys"), None)
    if node is None and len(call.args) > TAG_KEYS_AT[kind]:
        node = call.args[TAG_KEYS_AT[kind]]
    return frozenset() if node is None else frozenset(_strings(node, tuples, where))


def metric_definitions(source: str, where: str = "<source>") -> dict[str, Metric]:
    """The metrics `source` defines, by their names (`swarmray_...`) with their kinds and tag keys.

    A definition is a Counter, Gauge or Histogram made of `PREFIX + "name"`, or a call of a local
    helper (`latency("name", ...)`) that makes one of `PREFIX + <its first parameter>`. Anything
    else named `PREFIX + "name"` fails: a metric whose kind cannot be read is never skipped.
    """
    tree = ast.parse(source)
    tuples = _tuples(tree)
    helpers: dict[str, tuple[str, ast.Call]] = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef) and fn.args.args:
            first = fn.args.args[0].arg
            for call in ast.walk(fn):
                named = _prefixed(_name_arg(call)) if isinstance(call, ast.Call) else None
                if isinstance(named, ast.Name) and named.id == first and _kind(call):
                    helpers[fn.name] = (_kind(call), call)

    found: dict[str, Metric] = {}

    def define(name: Any, kind: str, call: ast.Call, line: int) -> None:
        assert isinstance(name, str), f"{where}:{line}: a metric's name is not a string literal"
        assert name not in found, f"{where}:{line}: {name} is defined twice"
        found[name] = Metric(kind, _tag_keys(call, kind, tuples, f"{where}:{line}"))

    helper_calls = {id(call) for _, call in helpers.values()}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        kind, named = _kind(node), _prefixed(_name_arg(node))
        if kind and id(node) not in helper_calls:
            assert isinstance(named, ast.Constant), (
                f"{where}:{node.lineno}: cannot read this {kind}'s name: {ast.unparse(node)[:80]}"
            )
            define(named.value, kind, node, node.lineno)
        elif isinstance(node.func, ast.Name) and node.func.id in helpers:
            kind, made = helpers[node.func.id]
            first = node.args[0] if node.args else None
            define(getattr(first, "value", None), kind, made, node.lineno)

    # A cross-check by regex: a `PREFIX + "name"` the walk above did not read (made by some other
    # class, or in some other way) would otherwise drop out of the dashboard's checks unseen.
    unread = set(PREFIXED_LITERAL.findall(source)) - found.keys()
    assert not unread, f"{where}: the kind of {sorted(unread)} cannot be determined"
    return {_prefix() + name: metric for name, metric in found.items()}


@functools.cache
def exported() -> dict[str, Metric]:
    metrics: dict[str, Metric] = {}
    for path in METRIC_MODULES:
        for name, metric in metric_definitions(path.read_text(), path.name).items():
            assert name not in metrics, f"{name} is defined in two modules"
            metrics[name] = metric
    return metrics


def scraped(metrics: dict[str, Metric]) -> dict[str, str]:
    """Each name the metrics are scraped as, to the metric's own name."""
    return {f"ray_{name}{suffix}": name for name, m in metrics.items() for suffix in SCRAPED_SUFFIXES[m.kind]}


# ---- what the dashboard shows


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those a collapsed row holds included."""
    return [q for p in dashboard["panels"] for q in (p, *p.get("panels", []))]


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in _panels(dashboard) for t in p.get("targets", [])]


def _variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query", "")
    return query.get("query", "") if isinstance(query, dict) else query


def _exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel query and every template variable's query."""
    panels = [(title, t["expr"]) for title, t in _targets(dashboard)]
    variables = [(f"${v['name']}", _variable_query(v)) for v in dashboard["templating"]["list"]]
    return panels + variables


def layout_problems(dashboard: dict[str, Any]) -> list[str]:
    problems = []
    ids = [p.get("id") for p in _panels(dashboard)]
    if not all(isinstance(i, int) for i in ids) or len(set(ids)) != len(ids):
        problems.append(f"panel ids are not unique integers: {ids}")
    boxes = []
    for p in dashboard["panels"]:
        pos = p.get("gridPos", {})
        h, w, x, y = (pos.get(k) for k in "hwxy")
        if not all(isinstance(v, int) for v in (h, w, x, y)) or h < 1 or w < 1 or x < 0 or y < 0:
            problems.append(f"{p.get('title')}: bad gridPos {pos}")
        elif x + w > GRID_WIDTH:
            problems.append(f"{p.get('title')}: x + w = {x + w} > {GRID_WIDTH}")
        else:
            boxes.append((p.get("title"), x, y, w, h))
    for (a, ax, ay, aw, ah), (b, bx, by, bw, bh) in itertools.combinations(boxes, 2):
        if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
            problems.append(f"{a!r} and {b!r} overlap")
    return problems


def name_problems(dashboard: dict[str, Any], metrics: dict[str, Metric]) -> list[str]:
    names = scraped(metrics)
    return [
        f"{where}: {name} is not a name swarmray's metrics are scraped as"
        for where, expr in _exprs(dashboard)
        for name in NAME_IN_EXPR.findall(expr)
        if name not in names
    ]


def unshown(dashboard: dict[str, Any], metrics: dict[str, Metric]) -> list[str]:
    used = {name for _, expr in _exprs(dashboard) for name in NAME_IN_EXPR.findall(expr)}
    return sorted(
        name
        for name, m in metrics.items()
        if not any(f"ray_{name}{suffix}" in used for suffix in SCRAPED_SUFFIXES[m.kind])
    )


def filter_problems(dashboard: dict[str, Any], metrics: dict[str, Metric]) -> list[str]:
    """Queries that do not follow the dashboard's variables, or ask for labels their metrics lack."""
    names, problems = scraped(metrics), []
    for title, target in _targets(dashboard):
        expr = target["expr"]
        selectors = SELECTOR.findall(expr)
        if not selectors:
            problems.append(f"{title}: {expr!r} queries no swarmray metric")
        carried = set(ADDED_LABELS)
        for name, matchers in selectors:
            if name not in names:
                continue  # name_problems says so
            tags = metrics[names[name]].tags
            carried |= tags
            found = {label: (op, value) for label, op, value in MATCHER.findall(matchers)}
            if found.get("SessionName") != ("=~", "$SessionName"):
                problems.append(f'{title}: {name} is not filtered on SessionName=~"$SessionName"')
            if "system" in tags and found.get("system") != ("=~", "$system"):
                problems.append(f'{title}: {name} is not filtered on system=~"$system"')
            if "system" not in tags:
                problems.append(f"{title}: {name} has no `system` tag to follow $system")
            if "swarm" in tags and found.get("swarm") != ("=~", "$swarm"):
                problems.append(f'{title}: {name} is not filtered on swarm=~"$swarm"')
            for label in found.keys() - tags - ADDED_LABELS:
                problems.append(f"{title}: {name} has no label {label!r} to filter on")
        grouped = {lb.strip() for g in GROUPING.findall(expr) for lb in g.split(",") if lb.strip()}
        legend = set(LEGEND_LABEL.findall(target.get("legendFormat", "")))
        for label in sorted((grouped | legend) - carried):
            problems.append(f"{title}: no metric of {expr!r} has the label {label!r}")
    return problems


# ---- the tests


def test_the_metric_definitions_are_read_with_their_kinds_and_tags():
    metrics = exported()
    task = frozenset({"system", "swarm", "capability"})
    assert metrics["swarmray_tasks_submitted"] == Metric("Counter", task)
    assert metrics["swarmray_task_run_seconds"] == Metric("Histogram", task)  # via latency(...)
    assert metrics["swarmray_queue_depth"] == Metric("Gauge", task)
    assert metrics["swarmray_journal_bytes"] == Metric("Gauge", frozenset({"system", "journal"}))
    # The services' constructors take their tag keys by position.
    assert metrics["swarmray_http_request_seconds"] == Metric(
        "Histogram", frozenset({"system", "service", "route"})
    )
    assert metrics["swarmray_ai_tokens"] == Metric("Counter", frozenset({"system", "model", "key", "kind"}))
    names = scraped(metrics)
    assert names["ray_swarmray_tasks_submitted_total"] == "swarmray_tasks_submitted"
    assert names["ray_swarmray_task_run_seconds_bucket"] == "swarmray_task_run_seconds"
    assert "ray_swarmray_tasks_submitted" not in names and "ray_swarmray_task_run_seconds" not in names


def test_a_metric_of_unknown_kind_fails_the_reading():
    with pytest.raises(AssertionError, match=r"kind of \['odd'\] cannot be determined"):
        metric_definitions('x = Summary(PREFIX + "odd", "A summary.", tag_keys=("system",))\n')
    with pytest.raises(AssertionError, match="cannot read this Gauge's name"):
        metric_definitions('x = Gauge("swarmray_" + name, "Spelled otherwise.")\n')
    helper = (
        "def timing(name, doc):\n"
        "    return Histogram(PREFIX + name, doc, boundaries=B, tag_keys=_T)\n"
        '_T = ("system",)\n'
        'x = timing("odd_seconds", "Made by a helper.")\n'
    )
    assert metric_definitions(helper) == {
        _prefix() + "odd_seconds": Metric("Histogram", frozenset({"system"}))
    }


def test_the_dashboard_is_a_grafana_model_with_unique_ids_and_panels_that_do_not_overlap():
    dashboard = _dashboard()
    assert dashboard.keys() >= TOP_LEVEL, TOP_LEVEL - dashboard.keys()
    assert (dashboard["title"], dashboard["uid"]) == ("swarmray", "swarmray")
    assert isinstance(dashboard["panels"], list) and dashboard["panels"]
    assert layout_problems(dashboard) == []
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["type"] in ("timeseries", "stat"), panel["title"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']} has no unit"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]

    overlapping = copy.deepcopy(dashboard)
    overlapping["panels"][-1]["gridPos"] = dict(overlapping["panels"][-2]["gridPos"])
    assert any("overlap" in p for p in layout_problems(overlapping))


def test_the_rows_come_in_order_each_over_its_panels():
    panels = _dashboard()["panels"]
    # Grafana puts a panel under the row above it: the list follows the layout, a row first.
    assert panels == sorted(panels, key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    assert panels[0]["type"] == "row"
    titles = [p["title"] for p in panels if p["type"] == "row"]
    assert [t for t in titles if t in ROWS] == ROWS
    starts = [i for i, p in enumerate(panels) if p["type"] == "row"] + [len(panels)]
    for a, b in itertools.pairwise(starts):
        assert b > a + 1 or panels[a].get("panels"), f"row {panels[a]['title']!r} holds no panel"


def test_every_name_queried_is_one_swarmray_exports():
    dashboard, metrics = _dashboard(), exported()
    assert name_problems(dashboard, metrics) == []

    # A counter without `_total`, or a histogram without its suffix, is not scraped.
    for good, bad in [
        ("ray_swarmray_tasks_submitted_total{", "ray_swarmray_tasks_submitted{"),
        ("ray_swarmray_task_run_seconds_bucket{", "ray_swarmray_task_run_seconds{"),
    ]:
        broken = json.loads(json.dumps(dashboard).replace(good, bad))
        assert any(bad[:-1] + " " in p for p in name_problems(broken, metrics)), bad


def test_every_exported_metric_is_on_a_panel():
    dashboard, metrics = _dashboard(), exported()
    assert unshown(dashboard, metrics) == []
    assert unshown(dashboard, {**metrics, "swarmray_new": Metric("Gauge", frozenset())}) == ["swarmray_new"]


def test_every_query_follows_the_template_variables():
    dashboard, metrics = _dashboard(), exported()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    # Every system has swarms, and every queen sets its queue depth from its start on.
    assert _variable_query(variables["system"]) == "label_values(ray_swarmray_queue_depth, system)"
    assert (
        _variable_query(variables["swarm"])
        == 'label_values(ray_swarmray_queue_depth{system=~"$system"}, swarm)'
    )

    assert all(variables[v]["includeAll"] and variables[v]["multi"] for v in ("system", "swarm"))
    assert variables["SessionName"]["type"] == "query"
    assert _variable_query(variables["SessionName"]).endswith(", SessionName)")
    assert filter_problems(dashboard, metrics) == []

    unfiltered = json.loads(json.dumps(dashboard).replace('system=~\\"$system\\",', "", 1))
    assert any('system=~"$system"' in p for p in filter_problems(unfiltered, metrics))
