"""Property-based fuzzing of a service's OpenAPI schema with schemathesis, over real HTTP.

For every operation of the schema, schemathesis draws requests that fit it (positive) and
requests that break it (negative). So that they get past the namespace and model checks and
reach the code behind them, a drawn path parameter or body field named in `Target.fixed` is
replaced, most of the time, by one of the values given for it (real namespaces, models and
object ids). Each request is sent three times:

- with a key that may do everything: it must not get a 5xx, must answer within `timeout_s`,
  and must match the schema (status code, content type and body);
- with no key or an unknown one, at random: it must get 401;
- with a key of one scope the operation does not need: it must not succeed.

What breaks a rule is counted in a `Tally` (`server_errors`, `schema_violations`,
`auth_bypasses`, `hangs`), and the first few are kept with the request that caused them.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from models._private.core.names import bearer

__all__ = ["Tally", "Target", "deploy_targets", "fuzz", "remove_targets"]

_CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]
_KEEP = 10  # problems kept with their requests
_FIXED_SHARE = 0.9  # how often a fixed value replaces what was drawn


@dataclass
class Tally:
    """Requests sent, and the problems found."""

    requests: int = 0
    server_errors: int = 0
    schema_violations: int = 0
    auth_bypasses: int = 0
    hangs: int = 0
    operations: int = 0
    accepted: int = 0  # requests with the admin key that got a 2xx: how far past validation it got
    examples: list[str] = field(default_factory=list)

    def problem(self, kind: str, case: Any, detail: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < _KEEP:
            body = repr(case.body)[:300] if case.body is not None else ""
            self.examples.append(f"{kind}: {case.method} {case.formatted_path} {body} -> {detail[:1500]}")

    @property
    def problems(self) -> int:
        return self.server_errors + self.schema_violations + self.auth_bypasses + self.hangs

    def figures(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k != "examples"}


@dataclass
class Target:
    """One service: `root` is where its schema's paths start (http://host:port/prefix);
    `fixed` maps a path parameter or top-level body field to the values to use for it;
    `narrow` is a key whose one scope `open_to_narrow` (paths) needs, and no other."""

    root: str
    admin_key: str
    narrow_key: str
    open_to_narrow: set[str] = field(default_factory=set)
    fixed: dict[str, list[Any]] = field(default_factory=dict)


def _pin(case: Any, fixed: dict[str, list[Any]], rng: random.Random) -> None:
    for name, values in fixed.items():
        if not values or rng.random() > _FIXED_SHARE:
            continue
        if case.path_parameters and name in case.path_parameters:
            case.path_parameters[name] = rng.choice(values)
        if isinstance(case.body, dict) and name in case.body:
            case.body[name] = rng.choice(values)


def _send(tally: Tally, case: Any, root: str, key: str | None, timeout_s: float) -> Any:
    tally.requests += 1
    try:
        return case.call(base_url=root, headers=bearer(key), timeout=timeout_s)
    except requests.Timeout:
        tally.problem("hangs", case, f"no answer within {timeout_s} s")
    except requests.ConnectionError as e:  # the server dropped it: as bad as a 5xx
        tally.problem("server_errors", case, f"connection failed: {e}")
    return None


def _probe(tally: Tally, case: Any, target: Target, rng: random.Random, timeout_s: float) -> None:
    response = _send(tally, case, target.root, target.admin_key, timeout_s)
    if response is not None:
        tally.accepted += response.status_code < 300
        if response.status_code >= 500:
            tally.problem("server_errors", case, f"{response.status_code} {response.text}")
        else:
            try:
                case.validate_response(response, checks=_CHECKS, headers=bearer(target.admin_key))
            except (AssertionError, FailureGroup) as e:  # how schemathesis reports failures
                tally.problem("schema_violations", case, f"{response.status_code}: {e}")
    stranger = rng.choice([None, "sr-" + "x" * 43])
    response = _send(tally, case, target.root, stranger, timeout_s)
    if response is not None and response.status_code != 401:
        tally.problem(
            "auth_bypasses", case, f"{'no' if stranger is None else 'an unknown'} key: {response.status_code}"
        )
    if case.operation.path not in target.open_to_narrow:
        response = _send(tally, case, target.root, target.narrow_key, timeout_s)
        if response is not None and response.status_code < 400:
            tally.problem("auth_bypasses", case, f"a key out of scope: {response.status_code}")


def fuzz(target: Target, examples: int, timeout_s: float = 30.0, seed_value: int = 0) -> Tally:
    """Runs `examples` positive and half as many negative cases per operation of the service's
    schema (read over HTTP with the admin key), each probed three ways (see the module doc)."""
    schema = schemathesis.openapi.from_url(target.root + "/openapi.json", headers=bearer(target.admin_key))
    tally = Tally()
    rng = random.Random(seed_value)
    for result in schema.get_all_operations():
        operation = result.ok()
        tally.operations += 1
        for mode, n in (
            (GenerationMode.POSITIVE, examples),
            (GenerationMode.NEGATIVE, max(1, examples // 2)),
        ):
            strategy = operation.as_strategy(generation_mode=mode)

            @seed(seed_value)
            @settings(
                max_examples=n,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: Any) -> None:
                _pin(case, target.fixed, rng)
                _probe(tally, case, target, rng, timeout_s)

            try:
                run()
            except Exception as e:  # a strategy that cannot be drawn (no negative form)
                if "Unsatisfiable" not in type(e).__name__ and "negative" not in str(e).lower():
                    raise
    return tally


_APPS = ("fuzz-ai", "fuzz-facts")


def deploy_targets(system: str, port: int, directory: str) -> dict[str, Target]:
    """Both services of `system`, auth on, on `port` (Ray connected): the AI service with a tiny
    random-weight model (built in `directory`) and the embedder, the facts service with two
    namespaces holding a document and a fact; and keys for `fuzz`: an admin, and for each
    service a key of one scope it does not use (`usage:read` is one the AI service does)."""
    import ray
    import requests as http

    from models import build_tiny_model
    from serve import AIServiceConfig, FactsServiceConfig, deploy
    from serve._private.auth.authority import get_authority
    from serve._private.auth.config import AuthConfig

    auth = AuthConfig(enabled=True, path=f"{directory}/auth", sync_timeout_s=0.5)
    authority = get_authority(system, auth)

    def key(name: str, scopes: list[str]) -> str:
        return ray.get(authority.create.remote({"name": name, "scopes": scopes}))["key"]

    admin, usage, embed = key("admin", ["admin"]), key("usage", ["usage:read"]), key("embed", ["ai:embed"])
    tiny = {
        "source": build_tiny_model(f"{directory}/tiny"),
        "colocate": True,
        "engine": {"max_model_len": 64},
    }
    ai = AIServiceConfig(port=port, route_prefix="/fuzz-ai", models={"tiny": tiny}, auth=auth)
    facts = FactsServiceConfig(
        port=port,
        route_prefix="/fuzz-facts",
        path=f"{directory}/facts",
        namespaces={"open": {"extractor": "none"}, "closed": {"extractor": "none"}},
        auth=auth,
    )
    ai_url = deploy(ai, app_name=_APPS[0], system=system)
    facts_url = deploy(facts, app_name=_APPS[1], system=system)
    headers = bearer(admin)
    document = {"id": "d1", "title": "Ada", "text": "Ada Lovelace wrote the first program."}
    http.post(f"{facts_url}/namespaces/open/documents", json=document, headers=headers).raise_for_status()
    fact = {"subject": "Ada Lovelace", "predicate": "wrote", "object": "the first program"}
    made = http.post(f"{facts_url}/namespaces/open/facts", json={"facts": [fact]}, headers=headers)
    made.raise_for_status()
    (stored,) = made.json()["facts"]
    return {
        "ai": Target(
            ai_url.removesuffix("/v1"),
            admin,
            usage,
            {"/v1/usage"},
            {"model": ["tiny", ai.embeddings_model]},
        ),
        "facts": Target(
            facts_url.removesuffix("/v1"),
            admin,
            embed,
            set(),
            {
                "namespace": ["open", "closed"],
                "namespaces": [["open"], ["open", "closed"]],
                "document_id": ["d1"],
                "fact_id": [stored["id"]],
                "entity_id": [stored["subject_id"], stored["object_id"]],
                "other_id": [stored["object_id"]],
                "other": [stored["object_id"]],
                "documents": [["d1"]],
            },
        ),
    }


def remove_targets(system: str) -> None:
    """Deletes what `deploy_targets` started."""
    import ray
    from ray import serve

    from models._private.core.names import authority_name

    for app in _APPS:
        serve.delete(app)
    ray.kill(ray.get_actor(authority_name(system), namespace=system))
