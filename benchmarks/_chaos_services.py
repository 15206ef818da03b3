"""Chaos for the services: the facts service and the AI service under load, with auth on, while
their parts are killed in turn; then what they acknowledged is read back and counted.

The load, for `duration_s` (and until the last part killed answers again), on threads of
their own, each with its own HTTP client:
- documents: post new documents, delete acknowledged ones, post a deleted id again with new
  content; a write without a definite answer (no answer, a 5xx) is sent again as it was (a
  document posted again with the same content is a retry, a delete of a deleted one a 404);
- facts: post facts (a fact posted again returns the stored one) and delete acknowledged ones;
- search and reads of the documents;
- the AI service: chat completions with an admin key, with a key of a low `rpm` sent twice as
  fast as its limit, and with a key of a small token budget until it is spent.
Meanwhile the parts are killed one after another, evenly over the run: a facts shard (the
process that holds it: the facts ingress's replica, colocated as by default), the facts
ingress, the AI gateway replica (with the colocated tiny model), the key authority and the
spaCy extractor, each with `ray.kill(no_restart=False)` (Serve replaces a replica, Ray restarts
the authority). The time to recover is from the kill until the part answers a request again.

Counted (`ServicesReport`): every status by kind; 5xx other than 503 (with examples); connection
errors, timeouts and the 500s Serve's HAProxy answers itself for a replica it lost mid-request
(`proxy_lost_backend`: no x-request-id, as no replica sent them) apart. After every part answers
again and extraction has caught up, every acknowledged write is read back against the client's
model of them: a document or fact acknowledged and not there (or with other content) is lost; a
document or fact acknowledged deleted and there, or an extracted fact whose source document no
longer says it (deleted, or posted again with other content), is come back. Each key's 2xx are
held to its limit: per fixed minute window for `rpm`, and over the whole run for the budget
(shorter than its period, so no window edge can excuse a second budget). Each acknowledged write
must have
its audit record (by its `x-request-id`) in the audit files.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from models._private.core import names
from models._private.core.names import bearer

__all__ = [
    "PARTS",
    "Services",
    "ServicesReport",
    "deploy_services",
    "directory_for",
    "remove_services",
    "run_services_chaos",
]

PARTS = ("facts-shard", "facts-ingress", "ai-gateway", "key-authority", "extractor")
NAMESPACE = "chaos"
MODEL = "tiny"
MAX_TOKENS = 8
RPM = 12  # the rpm key's limit; two threads send at twice it
BUDGET_REQUESTS = 0.5  # the budget holds about this share of what its callers send in a run
RETRY_FOR_S = 120.0  # how long a write without a definite answer is sent again
PROBE_TIMEOUT_S = 20.0
RECOVERY_LIMIT_S = 90.0  # a part not answering by then is counted unrecovered
SETTLE_S = 180.0  # after the load: every part answering, extraction caught up (60 s if one is not)
READ_TIMEOUT_S = 15.0
_EXAMPLES = 12
_SERVE_NAMESPACE = "serve"
_REPLICA_PREFIX = "SERVE_REPLICA::"
_WORDS = ["amber", "basalt", "cobalt", "dune", "ember", "fjord", "glacier", "harbor", "indigo", "kelp"]
_PEOPLE = ["Ada Lovelace", "Marie Curie", "Alan Turing", "Grace Hopper", "Emmy Noether", "Niels Bohr"]
_CITIES = ["London", "Warsaw", "Paris", "Berlin", "Vienna", "Copenhagen"]


@dataclass
class Services:
    """The two services of one system, deployed with auth on, and what the run needs of them."""

    system: str
    facts_url: str
    ai_url: str
    admin: str
    authority: Any
    audit_dir: str
    budget_tokens_per_request: int

    @property
    def facts_app(self) -> str:
        return names.facts_app_name(self.system)

    @property
    def ai_app(self) -> str:
        return names.ai_app_name(self.system)


@dataclass
class ServicesReport:
    """What the run did and what it counted; `zeros()` are the figures that must be 0."""

    requests: int = 0
    statuses: Counter = field(default_factory=Counter)  # "kind status" -> n
    server_errors: int = 0  # 5xx other than 503
    unavailable_503: int = 0
    connection_errors: int = 0
    # A 500 that Serve's HAProxy answered itself for a replica it lost mid-request (Serve's
    # HAProxy config turns 502/503/504 into "500 Internal Server Error"): no replica sent it, so
    # it has no x-request-id. Counted apart, like a connection error; never a service's answer.
    proxy_lost_backend: int = 0
    timeouts: int = 0
    unexpected_4xx: int = 0
    documents_acknowledged: int = 0
    deletes_acknowledged: int = 0
    facts_acknowledged: int = 0
    fact_deletes_acknowledged: int = 0
    unresolved_writes: int = 0  # no definite answer within RETRY_FOR_S: left out of the checks
    unreadable: int = 0  # reads at the end that got no answer below 500: left out of the checks
    documents_lost: int = 0
    documents_changed: int = 0  # read back with other content (an older version)
    deletes_come_back: int = 0
    facts_lost: int = 0
    fact_deletes_come_back: int = 0
    facts_of_deleted_versions: int = 0  # read from a deleted document or an older version
    rpm_admitted: int = 0
    rpm_refused: int = 0
    rpm_over_limit: int = 0
    rpm_max_in_60s: int = 0  # any 60 s, not only aligned windows: for reading, not a limit
    budget_tokens: int = 0
    budget_tokens_charged: int = 0
    budget_admitted: int = 0
    budget_refused: int = 0
    budget_over_limit: int = 0
    audit_writes_checked: int = 0
    audit_missing: int = 0
    audit_missing_ai: int = 0  # AI 2xx without a record: group-committed, not promised durable
    kills: int = 0
    recover_s: dict[str, float | None] = field(default_factory=dict)
    ok_per_s_baseline: float | None = None
    ok_per_s_chaos: float | None = None
    examples: list[str] = field(default_factory=list)

    def example(self, text: str) -> None:
        if len(self.examples) < _EXAMPLES:
            self.examples.append(text[:600])

    @property
    def lost_or_come_back(self) -> int:
        return (
            self.documents_lost
            + self.documents_changed
            + self.deletes_come_back
            + self.facts_lost
            + self.fact_deletes_come_back
            + self.facts_of_deleted_versions
        )

    @property
    def admitted_past_limit(self) -> int:
        return self.rpm_over_limit + self.budget_over_limit

    @property
    def unrecovered(self) -> int:
        return sum(v is None for v in self.recover_s.values())

    def zeros(self) -> dict[str, int]:
        """The figures the services promise to keep at 0."""
        return {
            "lost_or_come_back": self.lost_or_come_back,
            "admitted_past_limit": self.admitted_past_limit,
            "server_errors": self.server_errors,
            "audit_missing": self.audit_missing,
            "unrecovered": self.unrecovered,
            "unreadable": self.unreadable,
        }

    def figures(self) -> dict[str, Any]:
        """Everything as one flat dict for the closing JSON line."""
        out: dict[str, Any] = {**self.zeros()}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name in ("statuses", "recover_s", "examples"):
                continue
            out[name] = value
        for part in PARTS:
            out[f"recover_s_{part.replace('-', '_')}"] = self.recover_s.get(part)
        if self.ok_per_s_baseline and self.ok_per_s_chaos is not None:
            out["throughput_ratio"] = self.ok_per_s_chaos / self.ok_per_s_baseline
        return out


# -- deploying ----------------------------------------------------------------------------------


def deploy_services(system: str, port: int, directory: str) -> Services:
    """Both services of `system` with auth on, on `port` (Ray connected): the AI service with a
    tiny random-weight model colocated in its gateway (built in `directory`, no embedder), the
    facts service with one namespace read by spaCy; an admin key."""
    import ray

    from models import build_tiny_model
    from serve import AIServiceConfig, FactsServiceConfig, deploy
    from serve._private.auth.authority import get_authority
    from serve._private.auth.config import AuthConfig

    auth = AuthConfig(enabled=True, path=f"{directory}/auth", sync_timeout_s=0.5)
    authority = get_authority(system, auth)
    admin = ray.get(authority.create.remote({"name": "admin", "scopes": ["admin"]}))["key"]
    tiny = {
        "source": build_tiny_model(f"{directory}/tiny"),
        "colocate": True,
        "engine": {"max_model_len": 128},
    }
    ai = AIServiceConfig(port=port, models={MODEL: tiny}, embeddings=None, auth=auth)
    facts = FactsServiceConfig(
        port=port,
        path=f"{directory}/facts",
        namespaces={NAMESPACE: {"extractor": "spacy", "num_cpus": 0}},
        auth=auth,
    )
    ai_url = deploy(ai, app_name=names.ai_app_name(system), system=system)
    facts_url = deploy(facts, app_name=names.facts_app_name(system), system=system)
    with httpx.Client(timeout=60) as http:
        r = http.post(f"{ai_url}/chat/completions", json=_chat(), headers=bearer(admin))
        r.raise_for_status()
        tokens = r.json()["usage"]["total_tokens"]
    return Services(
        system=system,
        facts_url=facts_url,
        ai_url=ai_url,
        admin=admin,
        authority=authority,
        audit_dir=ray.get(authority.audit_directory.remote()),
        budget_tokens_per_request=tokens,
    )


def remove_services(services: Services) -> None:
    """Deletes what `deploy_services` started."""
    import ray
    from ray import serve

    for app in (services.ai_app, services.facts_app):
        serve.delete(app)
    ray.kill(services.authority)


def _chat() -> dict[str, Any]:
    words = " ".join(random.sample(_WORDS, 3))
    return {"model": MODEL, "messages": [{"role": "user", "content": words}], "max_tokens": MAX_TOKENS}


# -- the client's side: requests, counts, and the model of what was acknowledged --------------------


def from_proxy(r: httpx.Response) -> bool:
    """Whether HAProxy answered `r` itself for a backend it lost: Serve's replicas put an
    x-request-id on every answer (their RequestIdMiddleware), its HAProxy error file does not."""
    return r.status_code == 500 and "x-request-id" not in r.headers and r.text == "Internal Server Error"


class _Tally:
    """Counts every answer, thread-safe; the current kill labels the examples."""

    def __init__(self, report: ServicesReport):
        self.report = report
        self.lock = threading.Lock()
        self.ok = 0  # 2xx of the phase running, for throughput
        self.killing = "-"

    def send(
        self, http: httpx.Client, kind: str, method: str, url: str, key: str, body: Any = None
    ) -> tuple[httpx.Response | None, str]:
        """One request with its own x-request-id; (the answer or None, that id)."""
        request_id = uuid.uuid4().hex
        headers = {**bearer(key), "x-request-id": request_id}
        try:
            r = http.request(method, url, json=body, headers=headers)
        except httpx.TimeoutException:
            self._count(kind, "timeout")
            return None, request_id
        except httpx.TransportError as e:
            self._count(kind, "connection")
            if self.report.connection_errors <= 3:
                self.report.example(f"connection error ({self.killing}): {method} {url}: {e!r}")
            return None, request_id
        if from_proxy(r):
            self._count(kind, "proxy")
            self.report.example(f"proxy 500, its backend lost ({self.killing}): {method} {url}")
            return r, request_id
        self._count(kind, r.status_code)
        if r.status_code >= 500 and r.status_code != 503:
            self.report.example(f"{r.status_code} ({self.killing}): {method} {url}: {r.text[:300]}")
        return r, request_id

    def _count(self, kind: str, status: int | str) -> None:
        with self.lock:
            report = self.report
            report.requests += 1
            report.statuses[f"{kind} {status}"] += 1
            if status == "timeout":
                report.timeouts += 1
            elif status == "connection":
                report.connection_errors += 1
            elif status == "proxy":
                report.proxy_lost_backend += 1
            elif status == 503:
                report.unavailable_503 += 1
            elif status >= 500:
                report.server_errors += 1
            elif 200 <= status < 300:
                self.ok += 1

    def unexpected(self, what: str) -> None:
        with self.lock:
            self.report.unexpected_4xx += 1
        self.report.example(f"unexpected ({self.killing}): {what}")


@dataclass
class _Document:
    versions: list[str]  # every text posted under the id, acknowledged or not
    text: str | None  # the acknowledged content; None: acknowledged deleted
    uncertain: bool = False  # a write never answered: left out of the checks


@dataclass
class _Model:
    """Every acknowledged write: documents by id, facts by id (None: deleted), and the request
    ids of the acknowledged writes and AI answers, for the audit."""

    documents: dict[str, _Document] = field(default_factory=dict)
    facts: dict[str, tuple[str, str, str] | None] = field(default_factory=dict)
    writes: list[str] = field(default_factory=list)
    ai_answers: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Load:
    """The workers of one phase; `stop` ends them."""

    def __init__(self, services: Services, tally: _Tally, model: _Model, phase: str, seed: int):
        self.s, self.tally, self.model, self.phase = services, tally, model, phase
        self.stop = threading.Event()
        self.rng = random.Random(seed)
        self.rpm_answers: list[tuple[float, float, int]] = []  # (sent, answered, status)
        self.budget_answers: list[tuple[float, int, int]] = []  # (answered, status, tokens)
        self.keys: dict[str, str] = {}

    def facts(self, path: str) -> str:
        return f"{self.s.facts_url}/namespaces/{NAMESPACE}{path}"

    # A write is sent until it gets a definite answer (below 500) or RETRY_FOR_S passes.
    # `retried` says whether an earlier attempt went unanswered (and may have been applied).
    def write(
        self, http: httpx.Client, kind: str, method: str, url: str, body: Any = None
    ) -> tuple[httpx.Response | None, bool]:
        give_up, retried = time.monotonic() + RETRY_FOR_S, False
        while True:
            r, request_id = self.tally.send(http, kind, method, url, self.s.admin, body)
            if r is not None and r.status_code < 500:
                if r.status_code < 300:
                    with self.model.lock:
                        self.model.writes.append(request_id)
                return r, retried
            if time.monotonic() > give_up:
                return None, True
            retried = True
            time.sleep(0.5)

    def documents(self, worker: int) -> None:
        live: list[str] = []
        deleted: list[str] = []
        serial = itertools.count()
        rng = random.Random(self.rng.random())
        with httpx.Client(timeout=60) as http:
            while not self.stop.is_set():
                roll = rng.random()
                if live and roll < 0.3:
                    doc_id = live.pop(rng.randrange(len(live)))
                    self._delete_document(http, doc_id, deleted)
                elif deleted and roll < 0.45:
                    doc_id = deleted.pop(rng.randrange(len(deleted)))
                    self._post_document(http, doc_id, rng, live, deleted)
                else:
                    doc_id = f"{self.phase}-w{worker}-{next(serial)}"
                    with self.model.lock:
                        self.model.documents[doc_id] = _Document([], None)
                    self._post_document(http, doc_id, rng, live, deleted)
                self.stop.wait(0.05)

    def _post_document(
        self, http: httpx.Client, doc_id: str, rng: random.Random, live: list[str], deleted: list[str]
    ) -> None:
        doc = self.model.documents[doc_id]
        person, city = rng.choice(_PEOPLE), rng.choice(_CITIES)
        tag = uuid.uuid4().hex[:10]
        year = 1900 + rng.randrange(100)
        text = f"{person} visited {city} in {year}. Note {doc_id} v{len(doc.versions)} {tag}."
        doc.versions.append(text)
        r, _ = self.write(
            http, "document.post", "POST", self.facts("/documents"), {"id": doc_id, "text": text}
        )
        if r is None:
            doc.uncertain = True
        elif r.status_code == 201:
            doc.text = text
            live.append(doc_id)
            with self.tally.lock:
                self.tally.report.documents_acknowledged += 1
        else:  # refused, so nothing changed: the id stays as acknowledged before, and is checked
            self.tally.unexpected(f"POST document {doc_id}: {r.status_code} {r.text[:200]}")

    def _delete_document(self, http: httpx.Client, doc_id: str, deleted: list[str]) -> None:
        doc = self.model.documents[doc_id]
        r, retried = self.write(http, "document.delete", "DELETE", self.facts(f"/documents/{doc_id}"))
        if r is None:
            doc.uncertain = True
        elif r.status_code == 200 or (r.status_code == 404 and retried):  # a 404: the first one did it
            doc.text = None
            deleted.append(doc_id)
            with self.tally.lock:
                self.tally.report.deletes_acknowledged += 1
        elif r.status_code == 404:  # an acknowledged document gone: left in the model, counted lost
            self.tally.unexpected(f"DELETE document {doc_id}: 404")
        else:
            self.tally.unexpected(f"DELETE document {doc_id}: {r.status_code} {r.text[:200]}")

    def facts_worker(self) -> None:
        live: list[str] = []
        rng = random.Random(self.rng.random())
        with httpx.Client(timeout=60) as http:
            while not self.stop.is_set():
                if live and rng.random() < 0.3:
                    fact_id = live.pop(rng.randrange(len(live)))
                    r, retried = self.write(http, "fact.delete", "DELETE", self.facts(f"/facts/{fact_id}"))
                    if r is not None and (r.status_code == 200 or (r.status_code == 404 and retried)):
                        with self.model.lock:
                            self.model.facts[fact_id] = None
                        with self.tally.lock:
                            self.tally.report.fact_deletes_acknowledged += 1
                    elif r is None:
                        with self.model.lock:
                            self.model.facts.pop(fact_id, None)
                        with self.tally.lock:
                            self.tally.report.unresolved_writes += 1
                    else:
                        self.tally.unexpected(f"DELETE fact {fact_id}: {r.status_code} {r.text[:200]}")
                else:
                    tag = uuid.uuid4().hex[:10]
                    posted = {
                        "subject": f"Agent {tag}",
                        "predicate": "works_with",
                        "object": f"Partner {tag}",
                    }
                    r, _ = self.write(http, "fact.post", "POST", self.facts("/facts"), {"facts": [posted]})
                    if r is not None and r.status_code == 201:
                        for fact in r.json()["facts"]:
                            with self.model.lock:
                                self.model.facts[fact["id"]] = (
                                    fact["subject"],
                                    fact["predicate"],
                                    fact["object"],
                                )
                            live.append(fact["id"])
                        with self.tally.lock:
                            self.tally.report.facts_acknowledged += 1
                    elif r is None:
                        with self.tally.lock:
                            self.tally.report.unresolved_writes += 1
                    else:
                        self.tally.unexpected(f"POST fact: {r.status_code} {r.text[:200]}")
                self.stop.wait(0.1)

    def search_worker(self) -> None:
        rng = random.Random(self.rng.random())
        with httpx.Client(timeout=60) as http:
            while not self.stop.is_set():
                query = f"{rng.choice(_PEOPLE)} visited {rng.choice(_CITIES)}"
                body = {
                    "query": query,
                    "namespaces": [NAMESPACE],
                    "k": 5,
                    "mode": rng.choice(["hybrid", "graph"]),
                }
                r, _ = self.tally.send(
                    http, "search", "POST", f"{self.s.facts_url}/search", self.s.admin, body
                )
                if r is not None and 400 <= r.status_code < 500:
                    self.tally.unexpected(f"search: {r.status_code} {r.text[:200]}")
                with self.model.lock:
                    ids = list(self.model.documents)
                if ids:
                    doc_id = rng.choice(ids)
                    r, _ = self.tally.send(
                        http, "document.get", "GET", self.facts(f"/documents/{doc_id}"), self.s.admin
                    )
                self.stop.wait(0.1)

    def ai_worker(self, kind: str, pause_s: float) -> None:
        key = self.keys.get(kind, self.s.admin)
        with httpx.Client(timeout=60) as http:
            while not self.stop.is_set():
                sent = time.time()
                r, request_id = self.tally.send(
                    http, f"ai.{kind}", "POST", f"{self.s.ai_url}/chat/completions", key, _chat()
                )
                answered = time.time()
                if r is not None:
                    if r.status_code == 200:
                        with self.model.lock:
                            self.model.ai_answers.append(request_id)
                    elif r.status_code == 429 and kind in ("rpm", "budget"):
                        pass  # at its limit, as meant
                    elif 400 <= r.status_code < 500:
                        self.tally.unexpected(f"chat ({kind}): {r.status_code} {r.text[:200]}")
                    if kind == "rpm":
                        with self.model.lock:
                            self.rpm_answers.append((sent, answered, r.status_code))
                    elif kind == "budget":
                        tokens = r.json()["usage"]["total_tokens"] if r.status_code == 200 else 0
                        with self.model.lock:
                            self.budget_answers.append((answered, r.status_code, tokens))
                self.stop.wait(pause_s)

    def make_keys(self, duration_s: float) -> None:
        """The phase's rpm key and budget key, made and waited for until the gateway knows them
        (a `/v1/usage` read with each, counted against the rpm key's limit as a request)."""
        import ray

        made = {
            "rpm": {"scopes": ["ai:invoke", "usage:read"], "rpm": RPM},
            # A day's budget, longer than any run: no window edge may admit a second one.
            "budget": {
                "scopes": ["ai:invoke", "usage:read"],
                "budget_tokens": self.budget_tokens(duration_s),
                "budget_period_s": 86400.0,
            },
        }
        for kind, spec in made.items():
            spec = {"name": f"{self.phase}-{kind}", **spec}
            self.keys[kind] = ray.get(self.s.authority.create.remote(spec))["key"]
        with httpx.Client(timeout=PROBE_TIMEOUT_S) as http:
            for kind, key in self.keys.items():
                deadline = time.monotonic() + 30
                while True:
                    sent = time.time()
                    status = http.get(f"{self.s.ai_url}/usage", headers=bearer(key)).status_code
                    if kind == "rpm":
                        self.rpm_answers.append((sent, time.time(), status))
                    if status == 200:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the new {kind} key is not known after 30 s: {status}")
                    time.sleep(0.2)

    def run(self, duration_s: float, chaos: Callable[[], None] | None = None) -> float:
        """Runs the workers for `duration_s` (and `chaos` on a thread of its own; the load
        lasts until it ends); returns the phase's 2xx per second."""
        workers = [
            threading.Thread(target=self.documents, args=(0,)),
            threading.Thread(target=self.documents, args=(1,)),
            threading.Thread(target=self.facts_worker),
            threading.Thread(target=self.search_worker),
            threading.Thread(target=self.ai_worker, args=("admin", 0.1)),
            *(threading.Thread(target=self.ai_worker, args=("rpm", 45 / RPM)) for _ in range(2)),
            *(threading.Thread(target=self.ai_worker, args=("budget", 1.0)) for _ in range(2)),
        ]
        chaos_thread = threading.Thread(target=chaos) if chaos else None
        ok_before = self.tally.ok
        start = time.monotonic()
        for t in workers:
            t.start()
        if chaos_thread:
            chaos_thread.start()
        self.stop.wait(duration_s)
        if chaos_thread:  # the load lasts until the last part killed answers again
            chaos_thread.join()
        self.stop.set()
        for t in workers:
            t.join()
        elapsed = time.monotonic() - start
        return (self.tally.ok - ok_before) / elapsed

    def budget_tokens(self, duration_s: float) -> int:
        """A budget for about BUDGET_REQUESTS of what the two budget callers send in the run."""
        return max(1, int(duration_s * 2 * BUDGET_REQUESTS * self.s.budget_tokens_per_request))


# -- killing parts, and their recovery ------------------------------------------------------------


def _replica(app: str, deployment: str) -> tuple[str, str] | None:
    """(name, namespace) of a live replica actor of `deployment` in `app`."""
    import ray

    prefix = f"{_REPLICA_PREFIX}{app}#{deployment}#"
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == _SERVE_NAMESPACE and actor["name"].startswith(prefix):
            return actor["name"], actor["namespace"]
    return None


def _pid(name: str, namespace: str) -> int | None:
    """The process of the live actor `name`, by Ray's state API (None when unknown)."""
    from ray.util.state import list_actors

    try:
        alive = list_actors(
            filters=[("name", "=", name), ("ray_namespace", "=", namespace), ("state", "=", "ALIVE")]
        )
    except Exception:  # no dashboard: the state API is not there
        return None
    return alive[0].pid if alive else None


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")  # a zombie, not reaped yet
    except (OSError, IndexError):
        return True


class _Chaos:
    """Kills the parts in turn, evenly over `duration_s`, and times each one's recovery."""

    def __init__(self, services: Services, tally: _Tally, load: _Load, duration_s: float):
        from ray import serve

        self.s, self.tally, self.load, self.duration_s = services, tally, load, duration_s
        self.http = httpx.Client(timeout=PROBE_TIMEOUT_S)
        self.extractor = serve.get_deployment_handle(names.FACTS_EXTRACTOR_DEPLOYMENT, services.facts_app)
        # Called from threads with no event loop (Serve's throughput mode would want one).
        self.extractor._init(_run_router_in_separate_loop=True)
        self.last_error: dict[str, str] = {}
        self.started = time.monotonic()

    def target(self, part: str) -> tuple[str, str]:
        """(actor name, Ray namespace) of `part`'s process now."""
        if part == "key-authority":
            return names.authority_name(self.s.system), self.s.system
        app, deployment = {
            "facts-shard": (self.s.facts_app, names.facts_shard_name(NAMESPACE)),
            "facts-ingress": (self.s.facts_app, names.FACTS_INGRESS_DEPLOYMENT),
            "ai-gateway": (self.s.ai_app, names.GATEWAY_DEPLOYMENT),
            "extractor": (self.s.facts_app, names.FACTS_EXTRACTOR_DEPLOYMENT),
        }[part]
        found = _replica(app, deployment)
        if found is None and part == "facts-shard":  # colocated (the default): the ingress holds it
            found = _replica(app, names.FACTS_INGRESS_DEPLOYMENT)
        if found is None:
            raise RuntimeError(f"no live replica of {app}#{deployment}")
        return found

    def probe(self, part: str) -> bool:
        """Whether `part` answers a request now."""
        admin = bearer(self.s.admin)
        try:
            if part == "facts-shard":
                return self.http.get(self.load.facts(""), headers=admin).status_code == 200
            if part == "facts-ingress":  # a route the ingress answers by itself, without a shard
                root = self.s.facts_url.removesuffix("/v1")
                return self.http.get(f"{root}/openapi.json", headers=admin).status_code == 200
            if part == "ai-gateway":
                r = self.http.post(f"{self.s.ai_url}/chat/completions", json=_chat(), headers=admin)
                return r.status_code == 200
            if part == "key-authority":
                import ray

                ray.get(self.s.authority.list.remote(), timeout=PROBE_TIMEOUT_S)
                return True
            self.extractor.extract_many.remote(["Ada Lovelace was born in London."]).result(
                timeout_s=PROBE_TIMEOUT_S
            )
            return True
        except Exception as e:
            self.last_error[part] = repr(e)[:300]
            return False

    def kill(self, part: str) -> float | None:
        """Kills `part` so that it comes back; seconds until it answered again (None: not within
        RECOVERY_LIMIT_S)."""
        import ray

        name, namespace = self.target(part)
        pid = _pid(name, namespace)
        self.tally.killing = part
        killed = time.monotonic()
        ray.kill(ray.get_actor(name, namespace=namespace), no_restart=False)
        while pid is not None and not _gone(pid) and time.monotonic() - killed < 30:
            time.sleep(0.05)  # the old process must be gone before a probe's answer counts
        while time.monotonic() - killed < RECOVERY_LIMIT_S:
            if self.probe(part):
                self.tally.killing = "-"
                return time.monotonic() - killed
            time.sleep(0.2)
        return None

    def __call__(self) -> None:
        """Kills each part at its turn, evenly over the run (the first after a tenth of a turn),
        and never before the last one killed answers again and the load has had 3 s with it."""
        start = time.monotonic()
        for i, part in enumerate(PARTS):
            at = start + self.duration_s * (i + 0.1) / len(PARTS)
            time.sleep(max(0.0, at - time.monotonic()))
            print(f"{time.monotonic() - self.started:6.1f} s: killing {part}", flush=True)
            took = self.kill(part)
            self.tally.report.recover_s[part] = None if took is None else round(took, 2)
            self.tally.report.kills += 1
            back = f"answering again after {took:.1f} s" if took else f"not back: {self.last_error.get(part)}"
            print(f"{time.monotonic() - self.started:6.1f} s: {part} {back}", flush=True)
            time.sleep(3.0)

    def ready(self) -> None:
        """Fails unless every part answers its probe within a minute (before any kill)."""
        deadline = time.monotonic() + 60
        for part in PARTS:
            while not self.probe(part):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{part} does not answer: {self.last_error.get(part)}")
                time.sleep(0.5)

    def settle(self) -> None:
        """Waits until every part answers and extraction has caught up (bounded)."""
        deadline = time.monotonic() + (60.0 if self.tally.report.unrecovered else SETTLE_S)
        for part in PARTS:
            while not self.probe(part) and time.monotonic() < deadline:
                time.sleep(0.5)
        while time.monotonic() < deadline:
            try:
                r = self.http.get(self.load.facts(""), headers=bearer(self.s.admin))
                stats = r.json() if r.status_code == 200 else {}
            except httpx.TransportError:
                stats = {}
            if stats and not stats["unindexed"] and not stats["extraction"].get("pending"):
                return
            time.sleep(0.5)
        self.tally.report.example("extraction had not caught up when the read-back began")


# -- reading back ---------------------------------------------------------------------------------------


def _read_back(services: Services, model: _Model, report: ServicesReport) -> None:
    """Every acknowledged write against what the service holds now."""
    admin = bearer(services.admin)
    base = f"{services.facts_url}/namespaces/{NAMESPACE}"
    failing = 0  # reads in a row without an answer: past 3, the rest are not tried
    with httpx.Client(timeout=READ_TIMEOUT_S) as http:

        def get(path: str) -> httpx.Response | None:
            nonlocal failing
            if failing > 3:  # the shard is not answering: the rest are left unread, and counted
                report.unreadable += 1
                return None
            for _ in range(10):  # a part may still be settling: asked again
                try:
                    r = http.get(base + path, headers=admin)
                    if r.status_code < 500:
                        failing = 0
                        return r
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            failing += 1
            report.unreadable += 1
            if failing == 1:
                report.example(f"GET {path}: no answer below 500; later reads may be left out")
            return None

        for doc_id, doc in model.documents.items():
            if doc.uncertain:
                report.unresolved_writes += 1
                continue
            if not doc.versions:
                continue
            r = get(f"/documents/{doc_id}")
            if r is None:
                continue
            if doc.text is not None:
                if r.status_code == 404:
                    report.documents_lost += 1
                    report.example(f"document {doc_id} acknowledged, read back 404")
                elif r.status_code != 200 or r.json()["text"] != doc.text:
                    report.documents_changed += 1
                    report.example(f"document {doc_id} read back {r.status_code}: {r.text[:200]}")
            elif r.status_code != 404:
                report.deletes_come_back += 1
                report.example(f"document {doc_id} deleted, read back {r.status_code}: {r.text[:200]}")
        # What the extractor read from each document must be from the version acknowledged: a
        # fact from a deleted document, or naming what only an older version said, came back.
        r = get("/facts?predicate=visit&history=true")
        if r is not None and r.status_code != 200:
            report.example(f"listing the extracted facts: {r.status_code} {r.text[:200]}")
        for fact in r.json()["facts"] if r is not None and r.status_code == 200 else []:
            for source in {p.get("document_id") for p in fact["provenance"]}:
                doc = model.documents.get(source)
                if doc is None or doc.uncertain:
                    continue
                if doc.text is None or fact["subject"] not in doc.text or fact["object"] not in doc.text:
                    report.facts_of_deleted_versions += 1
                    report.example(
                        f"fact {fact['id']} ({fact['subject']} {fact['predicate']} {fact['object']}) "
                        f"from {source}, which now reads {doc.text!r}"
                    )
        for fact_id, spo in model.facts.items():
            r = get(f"/facts/{fact_id}")
            if r is None:
                continue
            if spo is None:
                if r.status_code != 404:
                    report.fact_deletes_come_back += 1
                    report.example(f"fact {fact_id} deleted, read back {r.status_code}")
            elif r.status_code != 200:
                report.facts_lost += 1
                report.example(f"fact {fact_id} acknowledged, read back {r.status_code}")
            elif (r.json()["subject"], r.json()["predicate"], r.json()["object"]) != spo:
                report.facts_lost += 1
                report.example(f"fact {fact_id} read back as {r.text[:200]}")


def _audit(services: Services, model: _Model, report: ServicesReport) -> None:
    """Each acknowledged write's record, by its request id, in the audit files."""
    from serve._private.auth.audit_verify import read_records

    recorded = {e.get("request_id") for e in read_records(services.audit_dir)}
    report.audit_writes_checked = len(model.writes)
    missing = [w for w in model.writes if w not in recorded]
    report.audit_missing = len(missing)
    if missing:
        report.example(f"writes without an audit record: {missing[:5]}")
    report.audit_missing_ai = sum(a not in recorded for a in model.ai_answers)


def _limits(load: _Load, report: ServicesReport, budget: int) -> None:
    """The rpm key's 2xx per fixed minute window, and the budget key's tokens over the run."""
    admitted = sorted((s, a) for s, a, status in load.rpm_answers if 200 <= status < 300)
    report.rpm_admitted += len(admitted)
    report.rpm_refused += sum(status == 429 for _, _, status in load.rpm_answers)
    windows: Counter = Counter()
    straddling = []
    for sent, answered in admitted:
        first, last = math.floor(sent / 60), math.floor(answered / 60)
        if first == last:
            windows[first] += 1
        else:
            straddling.append((first, last))
    for first, last in straddling:  # admitted in one of the two: the one with more room
        windows[min((first, last), key=lambda w: windows[w])] += 1
    over = sum(max(0, n - RPM) for n in windows.values())
    report.rpm_over_limit += over
    if over:
        report.example(f"rpm key ({load.phase}): 2xx per minute window {dict(windows)} against {RPM}")
    answered_at = [a for _, a in admitted]
    report.rpm_max_in_60s = max(
        report.rpm_max_in_60s,
        max((sum(t <= u < t + 60 for u in answered_at) for t in answered_at), default=0),
    )
    charged = 0
    for _, status, tokens in sorted(load.budget_answers):
        if status == 200:
            charged += tokens
            report.budget_admitted += 1
            if charged > budget:
                report.budget_over_limit += 1
        elif status == 429:
            report.budget_refused += 1
    report.budget_tokens += budget
    report.budget_tokens_charged += charged
    if charged > budget:
        report.example(f"budget key ({load.phase}): charged {charged} tokens of a budget of {budget}")


# -- the run ------------------------------------------------------------------------------------------


def run_services_chaos(
    services: Services, duration_s: float, baseline_s: float = 0.0, seed: int = 1
) -> ServicesReport:
    """The same load without kills for `baseline_s` (0: none), then with the parts killed in
    turn for `duration_s`; then every part answering again, the read-back, the audit and the
    limits (see the module doc)."""
    report, model = ServicesReport(), _Model()
    tally = _Tally(report)
    loads = []
    load = _Load(services, tally, model, "chaos", seed + 1)
    load.make_keys(duration_s)
    if baseline_s > 0:
        baseline = _Load(services, tally, model, "base", seed)
        baseline.make_keys(baseline_s)
        report.ok_per_s_baseline = baseline.run(baseline_s)
        print(f"baseline: {report.ok_per_s_baseline:.1f} answers/s")
        loads.append(baseline)
    chaos = _Chaos(services, tally, load, duration_s)
    chaos.ready()
    report.ok_per_s_chaos = load.run(duration_s, chaos)
    loads.append(load)
    chaos.settle()
    _read_back(services, model, report)
    _audit(services, model, report)
    for one in loads:
        _limits(one, report, one.budget_tokens(baseline_s if one.phase == "base" else duration_s))
    chaos.http.close()
    return report


def directory_for(system: str) -> str:
    """A fresh directory for a run's data."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"{system}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return str(path)
