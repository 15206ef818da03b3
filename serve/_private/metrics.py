"""The services' Prometheus metrics (`ray.serve.metrics`, made inside a replica so that Serve
tags them with its application, deployment and replica): HTTP requests and refusals, AI tokens,
cost and breakers, facts operations, record counts and backlogs; and the key authority's
(`ray.util.metrics`: it is a plain actor), how much of each key's budgets is used.

Every metric carries `system` (the Ray namespace); those of requests carry `service` (ai or
facts), the others what they are of (a model, a key, a backend, a facts namespace).
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager
from typing import Any

from models._private.core.metrics import BREAKER_VALUES, LATENCY_BUCKETS_S, PREFIX, keep, tag_values, timed

__all__ = ["AuthorityMetrics", "ServiceMetrics", "authority_metrics", "service_metrics"]


_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class ServiceMetrics:
    """One replica's metrics of one service."""

    def __init__(self, system: str, service: str):
        from ray.serve.metrics import Counter, Gauge, Histogram

        self.system, self.service = system, service
        http = ("system", "service", "route")
        self.requests = Counter(
            PREFIX + "http_requests",
            "Requests answered, by route template, method and status.",
            (*http, "method", "status"),
        )
        self.request_s = Histogram(
            PREFIX + "http_request_seconds",
            "From the request's arrival to its response's start (a stream's first byte).",
            LATENCY_BUCKETS_S,
            http,
        )
        self.refusals = Counter(
            PREFIX + "refusals",
            "Requests refused for their key: invalid_api_key, insufficient_permissions, "
            "rate_limit_exceeded, insufficient_quota.",
            ("system", "service", "key", "reason"),
        )
        ai = ("system", "model", "key")
        self.tokens = Counter(
            PREFIX + "ai_tokens", "Tokens charged, by kind: prompt or completion.", (*ai, "kind")
        )
        self.cost = Counter(
            PREFIX + "ai_cost_usd", "Cost charged by the price table (ai.prices), in USD.", ai
        )
        self.breaker = Gauge(
            PREFIX + "ai_breaker_state",
            "A backend's circuit breaker in this gateway replica: 0 closed, 1 half open, 2 open.",
            ("system", "backend"),
        )
        facts = ("system", "namespace", "operation")
        self.facts_s = Histogram(
            PREFIX + "facts_operation_seconds",
            "A facts shard's operations, in its thread.",
            LATENCY_BUCKETS_S,
            facts,
        )
        self.facts_errors = Counter(
            PREFIX + "facts_operation_errors", "Facts shard operations that raised.", facts
        )
        self.facts_records = Gauge(
            PREFIX + "facts_records",
            "What a facts namespace holds, by kind: documents, entities, facts.",
            ("system", "namespace", "kind"),
        )
        self.facts_backlog = Gauge(
            PREFIX + "facts_backlog",
            "Documents a facts namespace has still to process, by stage: extraction (waiting for "
            "the extractor), index (their passage not yet searchable).",
            ("system", "namespace", "stage"),
        )

    def answered(self, route: str, method: str, status: int, seconds: float) -> None:
        tags = tag_values(system=self.system, service=self.service, route=route)
        method = method if method in _METHODS else "other"  # the client's to choose: bounded
        self.requests.inc(1, {**tags, **tag_values(method=method, status=status)})
        self.request_s.observe(seconds, tags)

    def refused(self, key_id: str | None, reason: str) -> None:
        tags = tag_values(system=self.system, service=self.service, key=key_id or "none", reason=reason)
        self.refusals.inc(1, tags)

    def charged(self, model: str, key_id: str, prompt: int, completion: int, cost_usd: float) -> None:
        tags = tag_values(system=self.system, model=model, key=key_id)
        for kind, n in (("prompt", prompt), ("completion", completion)):
            if n > 0:  # Ray's counters refuse 0
                self.tokens.inc(n, {**tags, "kind": kind})
        if cost_usd > 0:
            self.cost.inc(cost_usd, tags)

    def breakers(self, states: dict[str, str]) -> None:
        for backend, state in states.items():
            keep(self.breaker, BREAKER_VALUES.get(state, 0), system=self.system, backend=backend)

    def facts_operation(self, namespace: str, operation: str) -> AbstractContextManager[None]:
        """Times a shard's operation; one that raises is also counted as an error."""
        tags = tag_values(system=self.system, namespace=namespace, operation=operation)
        return timed(self.facts_s, self.facts_errors, tags)

    def facts_held(self, namespace: str, counts: dict[str, Any]) -> None:
        for kind in ("documents", "entities", "facts"):
            if isinstance(counts.get(kind), int):
                keep(self.facts_records, counts[kind], system=self.system, namespace=namespace, kind=kind)

    def facts_backlog_now(self, namespace: str, extraction: int, index: int) -> None:
        """Documents waiting for the extractor and for the index, as the shard counted them."""
        for stage, n in (("extraction", extraction), ("index", index)):
            keep(self.facts_backlog, n, system=self.system, namespace=namespace, stage=stage)


class AuthorityMetrics:
    """The key authority's metrics: the share of each key's budgets (`budget_tokens`,
    `budget_usd`) granted in the window that counts now."""

    def __init__(self, system: str):
        from ray.util.metrics import Gauge

        self.system = system
        self.budget_used = Gauge(
            PREFIX + "key_budget_used_ratio",
            "The share of a key's budget granted in its window that counts now (budget: tokens or "
            "usd); 1 is the whole budget. Leases count as granted until given back.",
            tag_keys=("system", "key", "budget"),
        )

    def budget(self, key_id: str, budget: str, ratio: float) -> None:
        keep(self.budget_used, ratio, system=self.system, key=key_id, budget=budget)


@functools.cache
def authority_metrics(system: str) -> AuthorityMetrics:
    """The key authority's metrics in this process, made on first use."""
    return AuthorityMetrics(system)


@functools.cache
def service_metrics(system: str, service: str) -> ServiceMetrics:
    """This replica's metrics of `service`, made on first use (inside the replica, for Serve's
    tags)."""
    return ServiceMetrics(system, service)
