"""The facts service from a driver or a shell: documents read from files, ingested in batches,
jobs followed to the end, searches."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from actors._private.services import FACTS_URL_KEY, error_of
from cluster._private.connection import call, registry_of
from cluster._private.credentials import user_key
from cluster._private.endpoints import check_key_transport, url_here
from models._private.core.errors import RequestError
from models._private.core.names import bearer

__all__ = ["FactsClient", "read_documents"]

_TEXT_SUFFIXES = {".txt", ".md", ".rst", ".text"}


class FactsClient:
    """Talks to a facts service over HTTP.

    Example:
        facts = FactsClient.of_system("swarmray")
        jobs = facts.ingest([{"title": "Curie", "text": "Marie Curie was born in Warsaw."}])
        facts.wait(jobs)
        print(facts.search("Where was Marie Curie born?", mode="graph")["facts"])
    """

    def __init__(self, url: str, timeout_s: float = 300.0, api_key: str | None = None):
        """Raises ServiceURLError when `api_key` would go over plain HTTP to another machine
        (unless SWARMRAY_INSECURE_HTTP=1)."""
        check_key_transport(url, api_key)
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url + "/", timeout=timeout_s, headers=bearer(api_key))

    @classmethod
    def of_system(cls, namespace: str) -> FactsClient:
        """The client of the facts service `swarm up` deployed for the system in `namespace`
        (Ray must be connected), with the user's key (`user_key`) when there is one, at the URL
        this process reaches it at (`url_here`)."""
        url = call(lambda: registry_of(namespace).kv_get.remote(FACTS_URL_KEY))
        if not url:
            why = "configure `facts:` and `swarm up`"
            raise RuntimeError(f"system {namespace!r} has no facts service; {why}")
        return cls(url_here(url), api_key=user_key(namespace))

    def close(self) -> None:
        self._http.close()

    def _ask(self, method: str, path: str, **kw: Any) -> Any:
        r = self._http.request(method, path, **kw)
        if r.status_code >= 400:
            param, message = error_of(r)
            raise RequestError(param, f"the facts service answered {r.status_code}: {message}")
        return r.json()

    def ingest(
        self,
        documents: list[dict[str, Any]],
        namespace: str = "default",
        batch: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Posts `documents` in batches of `batch`; returns the jobs' ids. `on_batch(n)` is
        called as each batch of n documents is accepted.

        Raises:
            RequestError: the service refused a batch (earlier batches stay stored).
        """
        jobs = []
        for i in range(0, len(documents), batch):
            part = documents[i : i + batch]
            job = self._ask("POST", f"namespaces/{namespace}/documents/batch", json={"documents": part})
            jobs.append(job["id"])
            if on_batch is not None:
                on_batch(len(part))
        return jobs

    def progress(self, jobs: list[str], namespace: str = "default") -> dict[str, int]:
        """The jobs' documents added up: documents, indexed, and per extraction state."""
        total: dict[str, int] = {"documents": 0, "indexed": 0}
        for job in jobs:
            p = self._ask("GET", f"namespaces/{namespace}/jobs/{job}")
            total["documents"] += p["documents"]
            total["indexed"] += p["indexed"]
            for state, n in p["extraction"].items():
                total[state] = total.get(state, 0) + n
        return total

    def wait(
        self,
        jobs: list[str],
        namespace: str = "default",
        on_progress: Callable[[dict[str, int]], None] | None = None,
        timeout_s: float | None = None,
        poll_s: float = 0.5,
    ) -> dict[str, int]:
        """Polls the jobs until every document is indexed and read by the extractor (or
        `timeout_s` passes); returns the last progress."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            p = self.progress(jobs, namespace)
            if on_progress is not None:
                on_progress(p)
            done = p["indexed"] == p["documents"] and not p.get("pending")
            if done or (deadline is not None and time.monotonic() > deadline):
                return p
            time.sleep(poll_s)

    def search(self, query: str, **options: Any) -> dict[str, Any]:
        """POST /v1/search: options are k, mode, namespaces, as_of, depth, filters."""
        return self._ask("POST", "search", json={"query": query, **options})


def read_documents(source: str) -> Iterator[dict[str, Any]]:
    """Documents from `source`: a JSONL file (one document object a line: text, and optionally
    id, title, source, metadata, reference_time), a text file (one document, titled by its
    name), a directory of either (recursively, in name order), or "-" for standard input (JSONL
    when its first character is "{", else one text).

    Raises:
        ValueError: a line that is not a JSON object, or a path that does not exist.
    """
    if source == "-":
        data = sys.stdin.read()
        yield from _parse(data, "<stdin>", "stdin", jsonl=data.lstrip().startswith("{"))
        return
    path = Path(source)
    if not path.exists():
        raise ValueError(f"{source}: no such file or directory")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if f.suffix == ".jsonl" or f.suffix in _TEXT_SUFFIXES or not path.is_dir():
            yield from _parse(f.read_text(), str(f), f.stem, jsonl=f.suffix == ".jsonl")


def _parse(data: str, where: str, title: str, jsonl: bool) -> Iterator[dict[str, Any]]:
    if not jsonl:
        if data.strip():
            yield {"title": title, "text": data, "source": where}
        return
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}:{n}: not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise ValueError(f"{where}:{n}: a document must be a JSON object")
        yield {"source": where, **doc}
