"""The facts service's HTTP ingress: stateless replicas in front of one shard per namespace.

Routes (under the service's prefix, /facts by default):
- GET /v1/namespaces, GET /v1/namespaces/{ns}: what each holds, and how far extraction is;
- documents: POST …/documents (one, searchable on return), POST …/documents/batch (201 with a
  job, or 202 when larger than `sync_max_documents`: stored, indexed in the background),
  GET and DELETE …/documents/{id}, GET …/jobs/{id};
- facts: POST …/facts, GET …/facts (filtered), GET and DELETE …/facts/{id},
  POST …/facts/{id}/invalidate;
- entities: GET …/entities?name=, GET …/entities/{id}, …/{id}/neighbours, …/{id}/path/{other},
  POST …/{id}/merge, POST …/{id}/split;
- POST /v1/search over one or more namespaces.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError

from models._private.core.errors import (
    FactsInputError,
    FactsNotFoundError,
    FactsReadTimeoutError,
    ShardUnavailableError,
)
from models._private.core.names import FACTS_INGRESS_DEPLOYMENT
from models._private.core.retry import unwrap_error
from models._private.facts.schema import Document, DocumentIn, Entity, Fact
from models._private.facts.search import MAX_DEPTH
from models._private.facts.store.graph import MAX_WALK_FACTS
from models._private.facts.store.temporal import MAX_FACTS_PAGE
from serve._private.auth.audit_route import install_audit_route
from serve._private.auth.middleware import GuardMiddleware, allow, facts_rule, install_guard, usable
from serve._private.facts.config import FactsServiceConfig
from serve._private.facts.protocol import (
    DocumentsBody,
    EntityHit,
    FactsBody,
    FactsPage,
    InvalidateBody,
    JobOut,
    MergeBody,
    NeighboursOut,
    PathOut,
    SearchBody,
    SearchOut,
    SplitBody,
)
from serve._private.http_errors import error_response, install_error_handlers
from serve._private.tracing import TraceMiddleware, install_tracing

__all__ = ["FactsGateway", "app"]

T = TypeVar("T")
app = FastAPI(title="swarmray facts service")
install_error_handlers(app)
install_audit_route(app, "facts")
MAX_PATH = 6  # longest chain `path` looks for
_CLOSE_S = 50.0  # colocated shards' close, within the replica's graceful shutdown of 60 s
NS = "/v1/namespaces/{namespace}"
AsOf = Annotated[AwareDatetime | None, Query(description="Read the world as it was then.")]
Predicates = Annotated[list[str] | None, Query(alias="predicate", description="Follow only these.")]


@app.exception_handler(FactsInputError)
async def _bad_input(request: Request, exc: FactsInputError) -> JSONResponse:
    return error_response(400, str(exc), "invalid_request_error", exc.field, "invalid_value", request)


@app.exception_handler(FactsNotFoundError)
async def _not_found(request: Request, exc: FactsNotFoundError) -> JSONResponse:
    return error_response(404, str(exc), "invalid_request_error", exc.kind, f"{exc.kind}_not_found", request)


@app.exception_handler(FactsReadTimeoutError)
async def _read_timeout(request: Request, exc: FactsReadTimeoutError) -> JSONResponse:
    return error_response(503, str(exc), "service_unavailable", None, "read_timeout", request)


@app.exception_handler(ShardUnavailableError)
async def _unavailable(request: Request, exc: ShardUnavailableError) -> JSONResponse:
    return error_response(503, str(exc), "service_unavailable", "namespace", "shard_unavailable", request)


def _job(namespace: str, job: str, progress: dict[str, int], ids: list[str] | None = None) -> JobOut:
    extraction = {s: progress[s] for s in ("pending", "done", "failed", "none")}
    state = (
        "indexing"
        if progress["indexed"] < progress["documents"]
        else "extracting"
        if progress["pending"]
        else "done"
    )
    return JobOut(
        id=job,
        namespace=namespace,
        state=state,
        documents=progress["documents"],
        indexed=progress["indexed"],
        extraction=extraction,
        document_ids=ids,
    )


app.add_middleware(GuardMiddleware, rule=facts_rule, service="facts")
app.add_middleware(TraceMiddleware, service="facts")  # added last: outermost, so refusals are traced too


# Everything the routes use is defined above this line: `serve.ingress` pickles the app when
# the class is decorated, so later module globals would be missing in the replica.


@serve.deployment(name=FACTS_INGRESS_DEPLOYMENT, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class FactsGateway:
    """Validates requests and hands them to the shard of their namespace.

    Args:
        config: The FactsServiceConfig, dumped.
        shards: Namespace -> DeploymentHandle of its FactsShard.
        system: The system (Ray namespace) whose key authority checks requests (auth on).
        colocated: Namespace -> the arguments of a FactsShard to run in this replica instead
            (`colocate`).
    """

    def __init__(
        self,
        config: dict[str, Any],
        shards: dict[str, Any],
        system: str = "facts",
        colocated: dict[str, tuple[Any, ...]] | None = None,
    ):
        from serve._private.facts.shard import FactsShard, InProcessShard

        self.config = FactsServiceConfig.model_validate(config)
        install_guard(self.config.auth, system, "facts")
        install_tracing(self.config.tracing, system, "facts")
        self.local = {name: FactsShard(*args) for name, args in (colocated or {}).items()}
        self.shards = {**shards, **{name: InProcessShard(shard) for name, shard in self.local.items()}}

    async def check_health(self) -> None:
        # Serve restarts a replica whose check raises: a colocated shard's, as its own would be.
        for shard in self.local.values():
            await shard.check_health()

    def __del__(self) -> None:
        # Serve calls this on a graceful shutdown: every shard's workers told first, then each
        # waited for, within one minute for all (`SHARD_SHUTDOWN_S`, the replica's grace).
        shards = list(getattr(self, "local", {}).values())
        for shard in shards:
            shard.stop()
        deadline = time.monotonic() + _CLOSE_S
        for shard in shards:
            shard.close(deadline)

    async def search_namespace(self, namespace: str, query: str, **args: Any) -> Any:
        """One namespace's `FactsShard.search`, for the /mcp endpoint's handle: the shard's
        result (its errors as the service's), wherever the shard runs."""
        return await self._ask(namespace, lambda shard: shard.search.remote(query, **args))

    async def _ask(self, namespace: str, call: Callable[[Any], Awaitable[T]]) -> T:
        """`call(shard)` on the shard of `namespace` (a typed method of its FactsShard), with the
        shard's errors as the service answers them."""
        shard = self.shards.get(namespace)
        if shard is None:
            raise FactsNotFoundError("namespace", namespace)
        try:
            return await call(shard)
        except (RayActorError, ActorUnavailableError) as e:
            raise ShardUnavailableError(f"namespace {namespace!r} is restarting; retry shortly") from e
        except Exception as e:  # the shard's own error (a 4xx), not Ray's wrapper of it
            raise unwrap_error(e) from None

    # -- namespaces -----------------------------------------------------------------------

    @app.get("/v1/namespaces")
    async def list_namespaces(self, request: Request) -> dict[str, Any]:
        names = usable(request, list(self.shards), "namespace")  # a key sees the namespaces it may use
        stats = await asyncio.gather(*(self._ask(ns, lambda shard: shard.stats.remote()) for ns in names))
        return {"object": "list", "data": stats}

    @app.get(NS)
    async def namespace_stats(self, namespace: str) -> dict[str, Any]:
        return await self._ask(namespace, lambda shard: shard.stats.remote())

    # -- documents ------------------------------------------------------------------------

    @app.post(NS + "/documents", status_code=201)
    async def create_document(self, namespace: str, body: DocumentIn) -> Document:
        """One document, searchable as a passage when this returns; its entities and facts
        follow in the background (its `extraction` says how far)."""
        try:
            stored = await self._ask(namespace, lambda shard: shard.add_documents.remote([body], None, True))
        except FactsInputError as e:
            raise FactsInputError(e.field.removeprefix("documents.0."), e.reason) from None
        return stored[0]

    @app.post(NS + "/documents/batch", status_code=201)
    async def create_documents(self, namespace: str, body: DocumentsBody, response: Response) -> JobOut:
        """A batch in one transaction, as a job. Up to `sync_max_documents` documents are
        searchable when this returns (201); a larger batch is stored, answered with 202, and
        indexed in the background (the job's `indexed` counts)."""
        limit = self.config.max_batch_documents
        if len(body.documents) > limit:
            raise FactsInputError("documents", f"{len(body.documents)} documents; at most {limit} a request")
        job = "job-" + uuid.uuid4().hex
        now = len(body.documents) <= self.config.sync_max_documents
        stored = await self._ask(
            namespace, lambda shard: shard.add_documents.remote(body.documents, job, now)
        )
        if not now:
            response.status_code = 202
        progress = await self._ask(namespace, lambda shard: shard.job_progress.remote(job))
        return _job(namespace, job, progress, [d.id for d in stored])

    # `:path`: an id may hold slashes ("papers/2024/a.txt"); what it may not hold is in DocumentIn.
    @app.get(NS + "/documents/{document_id:path}")
    async def get_document(self, namespace: str, document_id: str) -> Document:
        return await self._ask(namespace, lambda shard: shard.get_document.remote(document_id))

    @app.delete(NS + "/documents/{document_id:path}")
    async def delete_document(self, namespace: str, document_id: str) -> dict[str, Any]:
        """Removes the document, its passage, and the facts and entities only it supported."""
        out = await self._ask(namespace, lambda shard: shard.delete_document.remote(document_id))
        return {"id": document_id, "object": "document", "deleted": True, **out}

    @app.get(NS + "/jobs/{job_id}")
    async def get_job(self, namespace: str, job_id: str) -> JobOut:
        progress = await self._ask(namespace, lambda shard: shard.job_progress.remote(job_id))
        return _job(namespace, job_id, progress)

    # -- facts ----------------------------------------------------------------------------

    @app.post(NS + "/facts", status_code=201)
    async def create_facts(self, namespace: str, body: FactsBody) -> dict[str, list[Fact]]:
        """Facts posted as they are, with no model; one that says what a stored fact says
        over overlapping times returns that fact."""
        return {"facts": await self._ask(namespace, lambda shard: shard.add_facts.remote(body.facts))}

    @app.get(NS + "/facts")
    async def list_facts(
        self,
        namespace: str,
        subject: str | None = None,
        predicate: str | None = None,
        entity: str | None = None,
        as_of: AsOf = None,
        history: bool = False,
        limit: Annotated[int, Query(ge=1, le=MAX_FACTS_PAGE, description="Facts a page holds.")] = 100,
        cursor: Annotated[str | None, Query(description="The last page's `next_cursor`.")] = None,
    ) -> FactsPage:
        """Facts that held at `as_of` (default now), or all ever recorded with `history`,
        by subject id, predicate, or an entity id at either end; a page of at most `limit` in
        the order they began, and `next_cursor` for the next (null after the last)."""
        if subject is None and predicate is None and entity is None:
            raise FactsInputError("subject", "give a subject, predicate or entity to list facts by")
        facts, after = await self._ask(
            namespace,
            lambda shard: shard.list_facts.remote(
                subject_id=subject,
                predicate=predicate,
                entity_id=entity,
                as_of=as_of,
                include_history=history,
                limit=limit,
                cursor=cursor,
            ),
        )
        return FactsPage(facts=facts, next_cursor=after)

    @app.get(NS + "/facts/{fact_id}")
    async def get_fact(self, namespace: str, fact_id: str) -> Fact:
        return await self._ask(namespace, lambda shard: shard.get_fact.remote(fact_id))

    @app.post(NS + "/facts/{fact_id}/invalidate")
    async def invalidate_fact(self, namespace: str, fact_id: str, body: InvalidateBody) -> Fact:
        """Marks the fact as ended at `invalid_at` (default now); `as_of` before then still
        reads it."""
        return await self._ask(
            namespace, lambda shard: shard.invalidate_fact.remote(fact_id, body.invalid_at)
        )

    @app.delete(NS + "/facts/{fact_id}")
    async def delete_fact(self, namespace: str, fact_id: str) -> dict[str, Any]:
        await self._ask(namespace, lambda shard: shard.delete_fact.remote(fact_id))
        return {"id": fact_id, "object": "fact", "deleted": True}

    # -- entities -------------------------------------------------------------------------

    @app.get(NS + "/entities")
    async def find_entities(
        self, namespace: str, name: Annotated[str, Query(min_length=1)], type: str | None = None
    ) -> dict[str, list[Entity]]:
        """Entities a name resolves to (exactly or fuzzily, as documents' names do)."""
        return {"entities": await self._ask(namespace, lambda shard: shard.find_entity.remote(name, type))}

    @app.get(NS + "/entities/{entity_id}")
    async def get_entity(self, namespace: str, entity_id: str) -> Entity:
        return await self._ask(namespace, lambda shard: shard.get_entity.remote(entity_id))

    @app.get(NS + "/entities/{entity_id}/neighbours")
    async def neighbours(
        self,
        namespace: str,
        entity_id: str,
        depth: Annotated[int, Query(ge=1, le=MAX_DEPTH)] = 1,
        predicates: Predicates = None,
        as_of: AsOf = None,
        limit: Annotated[int, Query(ge=1, le=MAX_WALK_FACTS, description="Facts it holds at most.")] = 1000,
    ) -> NeighboursOut:
        """Entities within `depth` facts of this one, and the facts between: the nearest
        `limit` facts (`truncated` when there were more)."""
        out = await self._ask(
            namespace, lambda shard: shard.neighbours.remote(entity_id, depth, as_of, predicates, limit)
        )
        entities = [EntityHit(**e, namespace=namespace) for e in out["entities"]]
        return NeighboursOut(entities=entities, facts=out["facts"], truncated=out["truncated"])

    @app.get(NS + "/entities/{entity_id}/path/{other_id}")
    async def path(
        self,
        namespace: str,
        entity_id: str,
        other_id: str,
        max_depth: Annotated[int, Query(ge=1, le=MAX_PATH)] = 4,
        predicates: Predicates = None,
        as_of: AsOf = None,
    ) -> PathOut:
        """A shortest chain of facts from one entity to the other, if one is `max_depth` long
        or shorter."""
        chain = await self._ask(
            namespace,
            lambda shard: shard.find_path.remote(
                entity_id, other_id, max_depth, as_of=as_of, predicates=predicates
            ),
        )
        return PathOut(found=chain is not None, facts=chain or [])

    @app.post(NS + "/entities/{entity_id}/merge")
    async def merge(self, namespace: str, entity_id: str, body: MergeBody) -> Entity:
        """A correction: `other` becomes part of this entity (names, mentions, facts)."""
        return await self._ask(namespace, lambda shard: shard.merge_entities.remote(entity_id, body.other))

    @app.post(NS + "/entities/{entity_id}/split", status_code=201)
    async def split(self, namespace: str, entity_id: str, body: SplitBody) -> Entity:
        """A correction: what `documents` say of this entity moves to a new one, `name`."""
        return await self._ask(
            namespace, lambda shard: shard.split_entity.remote(entity_id, body.documents, body.name)
        )

    # -- search ---------------------------------------------------------------------------

    @app.post("/v1/search")
    async def search(self, body: SearchBody, request: Request) -> SearchOut:
        """Passages, facts and (graph mode) entities for a query, over the namespaces named
        (default: every one the key may use), merged by score."""
        names = list(dict.fromkeys(body.namespaces or usable(request, list(self.shards), "namespace")))
        for name in names:  # first: a 404 here would tell a limited key which names exist
            allow(request, namespace=name)
        if unknown := [n for n in names if n not in self.shards]:
            raise FactsNotFoundError("namespace", unknown[0])
        args = dict(k=body.k, mode=body.mode, as_of=body.as_of, depth=body.depth, filters=body.filters)
        results = await asyncio.gather(
            *(self._ask(n, lambda shard: shard.search.remote(body.query, **args)) for n in names)
        )
        entities = [
            EntityHit(**e.model_dump(), namespace=n)
            for n, r in zip(names, results, strict=True)
            for e in r.entities
        ]
        out = SearchOut(
            passages=sorted((p for r in results for p in r.passages), key=lambda h: -h.score)[: body.k],
            facts=sorted((f for r in results for f in r.facts), key=lambda h: -h.score)[: body.k],
            entities=entities,
            seeds=[s for r in results for s in r.seeds],
        )
        # pydantic writes the JSON itself: 0.04 ms, where FastAPI's check and encoding of the
        # same model took 0.5 (the schema still comes from the annotation).
        return Response(out.model_dump_json(), media_type="application/json")
