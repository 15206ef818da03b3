"""Helpers shared by the benchmarks: timing, percentiles, the closing JSON line."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, interpolated."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[min(998, max(0, int(q * 10) - 1))]


def latencies_ms(fn: Callable[[], object], n: int) -> list[float]:
    """Runs `fn` n times one after another; returns each call's milliseconds."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def rate(fn: Callable[[], object], n_items: int) -> float:
    """Items per second of one call of `fn` that processes `n_items`."""
    t = time.perf_counter()
    fn()
    return n_items / (time.perf_counter() - t)


def emit(result: dict) -> None:
    """Prints the benchmark's last line: one JSON object."""
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


def ray_rss_gb() -> float:
    """Resident memory of this node's Ray processes (workers, raylet, GCS, dashboard), in GiB.

    Read from /proc (Linux); this process, the driver, is left out.
    """
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
            with open(f"/proc/{pid}/statm") as f:
                rss_pages = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if b"ray" in cmd and int(pid) != os.getpid():
            total += rss_pages * page
    return total / 2**30
