"""What every layer's Prometheus metrics share: the name prefix, latency buckets, and gauges that
stay in the scrape while nothing changes.

Metrics go through Ray's metrics agent (`ray.util.metrics` in actors, `ray.serve.metrics` in
Serve replicas), which serves them on each node's metrics export port with the prefix `ray_`:
`swarmray_tasks_submitted` is scraped as `ray_swarmray_tasks_submitted_total`. Names are
spelled once, in each layer's `metrics` module; README "Operations" lists them.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "BREAKER_VALUES",
    "LATENCY_BUCKETS_S",
    "PREFIX",
    "JournalMetrics",
    "journal_metrics",
    "keep",
    "label",
    "safely",
    "tag_values",
    "timed",
]

log = logging.getLogger(__name__)
PREFIX = "swarmray_"

LATENCY_BUCKETS_S = [
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    900,
    3600,
]
"""Histogram boundaries of every latency, in seconds: a millisecond journal sync to an hour-long
task."""

BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
"""A circuit breaker's state as the value of its gauge."""


def label(value: Any) -> str:
    """A tag value as Ray takes it: a string (Ray encodes tags as ASCII)."""
    return str(value).encode("ascii", "backslashreplace").decode()


def tag_values(**tags: Any) -> dict[str, str]:
    """Keyword tags as Ray's tag dict."""
    return {k: label(v) for k, v in tags.items()}


class _Refresher:
    """Re-sets every gauge this process has set, so that a value that does not change is not
    dropped: Ray's worker clears a gauge after each report, and its agent forgets a gauge not
    reported within two report intervals."""

    def __init__(self) -> None:
        self._values: dict[tuple[int, tuple[tuple[str, str], ...]], tuple[Any, float, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def set(self, gauge: Any, value: float, tags: dict[str, str]) -> None:
        gauge.set(value, tags)
        with self._lock:
            self._values[_key(gauge, tags)] = (gauge, value, tags)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="swarmray-gauges", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(_period_s())
            with self._lock:
                values = list(self._values.values())
            for gauge, value, tags in values:
                try:
                    gauge.set(value, tags)
                except Exception:  # a metric that can no longer be recorded is dropped
                    with self._lock:
                        self._values.pop(_key(gauge, tags), None)


def _key(gauge: Any, tags: dict[str, str]) -> tuple[int, tuple[tuple[str, str], ...]]:
    return id(gauge), tuple(sorted(tags.items()))


def _period_s() -> float:
    # Half Ray's report interval (RAY_metrics_report_interval_ms, 10 s by default), so that
    # every report carries the value.
    try:
        import ray

        interval_ms = ray._config.metrics_report_interval_ms()
    except Exception:  # Ray's private config moved: its default
        interval_ms = 10_000
    return max(0.25, interval_ms / 2000)


_refresher = _Refresher()


def safely(record: Callable[..., None], *args: Any) -> None:
    """`record(*args)`, where a failure to record a metric must not fail what it measures (a
    durable write, a stored document): it is logged instead."""
    try:
        record(*args)
    except Exception:
        log.warning("a metric could not be recorded", exc_info=True)


@contextmanager
def timed(histogram: Any, errors: Any, tags: dict[str, str]) -> Iterator[None]:
    """Observes the block's duration in `histogram`; a block that raises also counts in `errors`."""
    began = time.perf_counter()
    try:
        yield
    except BaseException:
        errors.inc(1, tags)
        raise
    finally:
        histogram.observe(time.perf_counter() - began, tags)


def keep(gauge: Any, value: float, **tags: Any) -> None:
    """Sets `gauge` to `value` for `tags` and keeps it in every report until set again."""
    _refresher.set(gauge, float(value), tag_values(**tags))


class JournalMetrics:
    """Every journal's (queens', the registry's, memory logs', the key authority's): the time
    of each group commit, its size, its compactions, and the size its owner compacts it at
    (owners that compact by size). Tags `system` and `journal`, its location."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        tags = ("system", "journal")
        self.sync_s = Histogram(
            PREFIX + "journal_sync_seconds",
            "One group commit: the write and its fdatasync (or the object's upload).",
            boundaries=LATENCY_BUCKETS_S,
            tag_keys=tags,
        )
        self.bytes = Gauge(
            PREFIX + "journal_bytes", "Bytes in the journal's current generation.", tag_keys=tags
        )
        self.compactions = Counter(
            PREFIX + "journal_compactions", "Rewrites of the journal as its live state.", tag_keys=tags
        )
        self.compact_at = Gauge(
            PREFIX + "journal_compact_at_bytes",
            "The size past which the journal's owner compacts it next (its limit, or twice its "
            "size after the last compaction).",
            tag_keys=tags,
        )


@functools.cache
def journal_metrics() -> JournalMetrics:
    """The journal metrics of this process, made on first use."""
    return JournalMetrics()
