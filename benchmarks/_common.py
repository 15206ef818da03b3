"""Helpers shared by the benchmarks: timing, percentiles, the closing JSON line."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any


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
    for pid, args, rss_pages in _processes("statm", lambda text: int(text.split()[1])):
        if "ray" in " ".join(args) and pid != os.getpid():
            total += rss_pages * page
    return total / 2**30


def _processes(name: str, parse: Callable[[str], Any]) -> Iterator[tuple[int, list[str], Any]]:
    """Each process's pid, its command line's arguments and its /proc/<pid>/<name> file as
    `parse` reads it (Linux); a process gone meanwhile is left out."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = [a.decode(errors="replace") for a in f.read().split(b"\0")]
            with open(f"/proc/{pid}/{name}") as f:
                value = parse(f.read())
        except (OSError, IndexError, ValueError):
            continue
        yield int(pid), args, value


def _process_label(cmd: list[str]) -> str:
    """A process's kind: a Ray worker's actor class or task (its title without the method it
    runs now), else its program or Python script's name."""
    if cmd[0].startswith("ray::"):
        return cmd[0].split()[0].split(".")[0]
    script = next((a for a in cmd[1:] if a.endswith(".py") and " " not in a), None)
    return os.path.basename(script or cmd[0])


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU seconds (user and system) each of this node's Ray processes, HAProxy and this process
    have used so far, by pid: (its kind, seconds). Read from /proc (Linux); a difference of two
    calls is where a run's CPU went."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid, args, fields in _processes("stat", lambda text: text.rsplit(")", 1)[1].split()):
        cmd = [a for a in args if a]
        if cmd and (pid == os.getpid() or any("ray" in a or "haproxy" in a for a in cmd[:2])):
            # utime and stime are the 14th and 15th fields of stat, the 12th and 13th after "(comm)".
            out[pid] = (_process_label(cmd), (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_spent(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two `cpu_seconds` readings, summed by process kind, largest first
    (a process started meanwhile counts from zero; the kind is the later reading's)."""
    spent: dict[str, float] = {}
    for pid, (label, seconds) in after.items():
        spent[label] = spent.get(label, 0.0) + seconds - before.get(pid, (label, 0.0))[1]
    return dict(sorted(((k, round(v, 2)) for k, v in spent.items() if v > 0), key=lambda kv: -kv[1]))
