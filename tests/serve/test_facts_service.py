"""The facts service over real HTTP (httpx) on the real Serve application: spaCy extraction in
the background, SQLite, the memory's FAISS and tantivy indexes, and one shard per namespace."""

import json

import httpx
import pytest
import ray

from serve import AIServiceConfig, FactsServiceConfig, deploy
from tests.scripted_provider import ScriptedProvider
from tests.waiting import wait_until

APP = "facts-test"
PREFIX = "/facts-test"
DOCS = [
    {"id": "curie", "title": "Marie Curie", "text": "Marie Curie was born in Warsaw. She studied physics."},
    {"id": "warsaw", "title": "Warsaw (city)", "text": "The city lies on the Vistula river in Poland."},
    {"id": "berlin", "title": "Berlin", "text": "Berlin lies on the Spree river in Germany."},
]


@pytest.fixture(scope="module")
def config(serve_port, tmp_path_factory):
    return FactsServiceConfig(
        auth={"enabled": False},  # tests/serve/test_auth.py covers keys
        port=serve_port,
        route_prefix=PREFIX,
        path=str(tmp_path_factory.mktemp("facts")),
        sync_max_documents=2,
        max_batch_documents=50,
        namespaces={
            "wiki": {"functional_predicates": ["works_for"], "num_cpus": 0.5},
            "other": {"extractor": "none", "num_cpus": 0},
        },
    )


@pytest.fixture(scope="module")
def http(config):
    url = deploy(config, app_name=APP)
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client
    from ray import serve

    serve.delete(APP)


def ns(name: str, path: str = "") -> str:
    return f"/namespaces/{name}{path}"


def extracted(http, namespace, document_id):
    doc = http.get(ns(namespace, f"/documents/{document_id}")).json()
    return doc["extraction"] in ("done", "failed") and doc


@pytest.fixture(scope="module")
def wiki(http):
    """The three documents in `wiki`, extracted."""
    for doc in DOCS:
        assert http.post(ns("wiki", "/documents"), json=doc).status_code == 201
    for doc in DOCS:
        wait_until(lambda d=doc: extracted(http, "wiki", d["id"]), 120, f"extraction of {doc['id']}")
    return http


def search(http, query, **kw):
    r = http.post("/search", json={"query": query, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_document_is_a_passage_at_once_and_its_facts_come_from_the_background(http):
    doc = {"id": "lovelace", "text": "Ada Lovelace was born in London. She wrote about the engine."}
    r = http.post(ns("wiki", "/documents"), json=doc)
    assert r.status_code == 201 and r.json()["extraction"] == "pending"
    hits = search(http, "Where was Ada Lovelace born?", mode="passages", namespaces=["wiki"], k=1)
    assert [p["document_id"] for p in hits["passages"]] == ["lovelace"]

    assert wait_until(lambda: extracted(http, "wiki", "lovelace"), 120)["extraction"] == "done"
    (top, *_) = search(http, "Ada Lovelace born", mode="facts", namespaces=["wiki"])["facts"]
    fact = top["fact"]
    assert (fact["subject"], fact["predicate"], fact["object"]) == ("Ada Lovelace", "born_in", "London")
    assert fact["provenance"][0]["document_id"] == "lovelace" and top["scores"]["fused"] > 0


def test_a_large_batch_is_accepted_with_202_and_a_job_that_reaches_done(http):
    docs = [{"id": f"city{i}", "text": f"Town number {i} lies in Ruritania."} for i in range(5)]
    r = http.post(ns("wiki", "/documents/batch"), json={"documents": docs})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["documents"] == 5 and job["document_ids"] == [d["id"] for d in docs]

    def finished():
        j = http.get(ns("wiki", f"/jobs/{job['id']}")).json()
        return j["state"] == "done" and j

    done = wait_until(finished, 120, "the job")
    assert done["indexed"] == 5 and done["extraction"]["pending"] == 0
    hits = search(http, "Town number 3 Ruritania", mode="passages", namespaces=["wiki"], k=1)
    assert hits["passages"][0]["document_id"] == "city3"
    small = http.post(ns("wiki", "/documents/batch"), json={"documents": [{"id": "x1", "text": "Tiny."}]})
    assert small.status_code == 201 and small.json()["indexed"] == 1  # searchable on return


def test_graph_search_reaches_the_second_hop_that_hybrid_misses(wiki):
    query = "Which river flows through the city where Marie Curie was born?"
    graph = search(wiki, query, mode="graph", namespaces=["wiki"], k=3)
    hybrid = search(wiki, query, mode="hybrid", namespaces=["wiki"], k=3)
    by_doc = {p["document_id"]: p for p in graph["passages"]}
    assert by_doc["warsaw"]["distance"] == 1 and by_doc["warsaw"]["scores"]["graph"] > 0
    assert by_doc["warsaw"]["score"] > by_doc["berlin"]["score"]
    assert all(p["scores"].get("graph", 0) == 0 for p in hybrid["passages"])
    (curie,) = wiki.get(ns("wiki", "/entities"), params={"name": "Marie Curie"}).json()["entities"]
    assert graph["seeds"] == [curie["id"]] and curie["id"] in {e["id"] for e in graph["entities"]}


def test_a_functional_predicate_ends_only_its_own_earlier_fact_and_as_of_reads_the_past(http):
    def post(*facts):
        r = http.post(ns("wiki", "/facts"), json={"facts": list(facts)})
        assert r.status_code == 201, r.text
        return r.json()["facts"]

    (acme,) = post(
        {"subject": "Grace", "predicate": "works_for", "object": "Acme", "valid_at": "2020-01-01T00:00:00Z"}
    )
    (paris,) = post(
        {"subject": "Grace", "predicate": "lives_in", "object": "Paris", "valid_at": "2020-01-01T00:00:00Z"}
    )
    (globex,) = post(
        {"subject": "Grace", "predicate": "works_for", "object": "Globex", "valid_at": "2024-01-01T00:00:00Z"}
    )
    grace = acme["subject_id"]
    now = http.get(ns("wiki", "/facts"), params={"subject": grace}).json()["facts"]
    assert {(f["predicate"], f["object"]) for f in now} == {("works_for", "Globex"), ("lives_in", "Paris")}
    then = http.get(ns("wiki", "/facts"), params={"subject": grace, "as_of": "2021-06-01T00:00:00Z"})
    assert {(f["predicate"], f["object"]) for f in then.json()["facts"]} == {
        ("works_for", "Acme"),
        ("lives_in", "Paris"),
    }
    old = http.get(ns("wiki", f"/facts/{acme['id']}")).json()
    assert old["invalid_at"] == "2024-01-01T00:00:00Z" and old["expired_at"] is not None
    assert http.get(ns("wiki", f"/facts/{paris['id']}")).json()["invalid_at"] is None

    ended = http.post(
        ns("wiki", f"/facts/{globex['id']}/invalidate"), json={"invalid_at": "2025-01-01T00:00:00Z"}
    )
    assert ended.status_code == 200 and ended.json()["invalid_at"] == "2025-01-01T00:00:00Z"
    assert http.delete(ns("wiki", f"/facts/{paris['id']}")).json()["deleted"] is True
    assert http.get(ns("wiki", f"/facts/{paris['id']}")).status_code == 404


def test_entities_neighbours_path_merge_and_split(http):
    http.post(
        ns("other", "/facts"),
        json={
            "facts": [
                {
                    "subject": "Lin",
                    "subject_type": "PERSON",
                    "predicate": "works_for",
                    "object": "Initech",
                    "object_type": "ORG",
                },
                {
                    "subject": "Initech",
                    "subject_type": "ORG",
                    "predicate": "based_in",
                    "object": "Austin",
                    "object_type": "GPE",
                },
                {
                    "subject": "L. Lin",
                    "subject_type": "PERSON",
                    "predicate": "likes",
                    "object": "tea",
                    "object_type": None,
                },
            ]
        },
    ).raise_for_status()

    def one(name):
        (e,) = http.get(ns("other", "/entities"), params={"name": name}).json()["entities"]
        return e

    lin, austin = one("Lin"), one("Austin")
    near = http.get(ns("other", f"/entities/{lin['id']}/neighbours"), params={"depth": 2}).json()
    assert {e["name"]: e["distance"] for e in near["entities"]} == {"Lin": 0, "Initech": 1, "Austin": 2}
    only = http.get(
        ns("other", f"/entities/{lin['id']}/neighbours"), params={"depth": 2, "predicate": "likes"}
    )
    assert [e["name"] for e in only.json()["entities"]] == ["Lin"]
    path = http.get(ns("other", f"/entities/{lin['id']}/path/{austin['id']}")).json()
    assert path["found"] and [f["predicate"] for f in path["facts"]] == ["works_for", "based_in"]
    assert http.get(
        ns("other", f"/entities/{lin['id']}/path/{austin['id']}"), params={"max_depth": 1}
    ).json() == {
        "found": False,
        "facts": [],
    }

    merged = http.post(ns("other", f"/entities/{lin['id']}/merge"), json={"other": one("L. Lin")["id"]})
    assert merged.status_code == 200 and "L. Lin" in merged.json()["aliases"]
    facts = http.get(ns("other", "/facts"), params={"subject": lin["id"]}).json()["facts"]
    assert {f["predicate"] for f in facts} == {"works_for", "likes"}
    # A split moves what given documents say; facts posted with no document stay put.
    refused = http.post(
        ns("other", f"/entities/{lin['id']}/split"), json={"documents": ["none"], "name": "Lin B"}
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "documents"


def test_deleting_one_of_two_supporting_documents_keeps_the_fact_and_both_remove_it_across_a_restart(wiki):
    for i in (1, 2):
        doc = {"id": f"hopper{i}", "text": "Grace Hopper was born in New York."}
        wiki.post(ns("wiki", "/documents"), json=doc).raise_for_status()
        wait_until(lambda i=i: extracted(wiki, "wiki", f"hopper{i}"), 120)

    def born():
        hits = search(wiki, "Grace Hopper born New York", mode="facts", namespaces=["wiki"])["facts"]
        return [
            h["fact"]
            for h in hits
            if h["fact"]["predicate"] == "born_in" and h["fact"]["subject"] == "Grace Hopper"
        ]

    (fact,) = born()
    assert {p["document_id"] for p in fact["provenance"]} == {"hopper1", "hopper2"}
    out = wiki.delete(ns("wiki", "/documents/hopper1")).json()
    assert out["deleted"] and out["facts_removed"] == []
    (kept,) = born()
    assert [p["document_id"] for p in kept["provenance"]] == ["hopper2"]
    assert fact["id"] in wiki.delete(ns("wiki", "/documents/hopper2")).json()["facts_removed"]

    restart_shards()
    assert wait_until(lambda: wiki.get(ns("wiki")).status_code == 200, 120)
    assert wiki.get(ns("wiki", "/documents/hopper2")).status_code == 404
    assert wiki.get(ns("wiki", f"/facts/{fact['id']}")).status_code == 404
    assert born() == []
    assert wiki.get(ns("wiki", "/entities"), params={"name": "Grace Hopper"}).json()["entities"] == []
    # What was not deleted is all there after the restart.
    assert wiki.get(ns("wiki", "/documents/curie")).json()["extraction"] == "done"


def restart_shards() -> None:
    """Kills the replica actor that holds the shards (the ingress's: the service is colocated, as
    by default) and waits for Serve to start another, which reopens the stores from their files."""
    from ray import serve

    # Colocated: the namespaces' shards have no deployments of their own.
    assert set(serve.status().applications[APP].deployments) == {"facts-ingress", "facts-extractor"}

    def replicas():
        return {
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "serve" and a["name"].startswith(f"SERVE_REPLICA::{APP}#facts-ingress#")
        }

    (old,) = replicas()
    ray.kill(ray.get_actor(old, namespace="serve"), no_restart=True)
    wait_until(lambda: replicas() - {old}, 120, "a new replica")


def test_namespaces_are_isolated(wiki):
    wiki.post(
        ns("other", "/facts"),
        json={
            "facts": [
                {
                    "subject": "Marie Curie",
                    "subject_type": "PERSON",
                    "predicate": "won",
                    "object": "Nobel Prize",
                }
            ]
        },
    ).raise_for_status()
    ((theirs,),) = [
        wiki.get(ns(n, "/entities"), params={"name": "Marie Curie"}).json()["entities"] for n in ["other"]
    ]
    (ours,) = wiki.get(ns("wiki", "/entities"), params={"name": "Marie Curie"}).json()["entities"]
    assert theirs["id"] != ours["id"] and ours["documents"] == ["curie"] and theirs["documents"] == []
    in_wiki = search(wiki, "Marie Curie Nobel Prize", mode="graph", namespaces=["wiki"])
    assert all(f["fact"]["predicate"] != "won" for f in in_wiki["facts"])
    assert {e["namespace"] for e in in_wiki["entities"]} == {"wiki"} and theirs["id"] not in in_wiki["seeds"]
    in_other = search(wiki, "Marie Curie born Warsaw", mode="graph", namespaces=["other"])
    assert in_other["passages"] == [] and {f["fact"]["predicate"] for f in in_other["facts"]} <= {
        "won",
        "works_for",
        "based_in",
        "likes",
    }
    both = search(wiki, "Marie Curie", mode="hybrid")  # every namespace, merged by score
    assert {f["namespace"] for f in both["facts"]} == {"wiki", "other"}
    listed = {n["namespace"]: n for n in wiki.get("/namespaces").json()["data"]}
    assert set(listed) == {"wiki", "other"} and listed["other"]["documents"] == 0


def test_a_document_id_with_slashes_is_read_and_deleted_by_its_path(http):
    doc = {"id": "papers/2024/curie.txt", "text": "Pierre Curie studied crystals in Paris."}
    assert http.post(ns("other", "/documents"), json=doc).status_code == 201
    got = http.get(ns("other", "/documents/papers/2024/curie.txt"))
    assert got.status_code == 200 and got.json()["id"] == doc["id"], got.text
    gone = http.delete(ns("other", "/documents/papers/2024/curie.txt"))
    assert gone.status_code == 200 and gone.json()["id"] == doc["id"], gone.text
    assert http.get(ns("other", "/documents/papers/2024/curie.txt")).json()["error"]["param"] == "document"
    # A dot segment is one no URL can carry (clients and proxies resolve it): refused, naming the field.
    for bad in ("a/../b", "..", "./a", "a/."):
        r = http.post(ns("other", "/documents"), json={"id": bad, "text": "Some text."})
        assert r.status_code == 400 and r.json()["error"]["param"] == "id", (bad, r.text)


def test_facts_are_listed_in_pages_of_at_most_the_limit(http):
    facts = [{"subject": "Pager", "predicate": "counts", "object": f"Number {i}"} for i in range(3)]
    assert http.post(ns("other", "/facts"), json={"facts": facts}).status_code == 201
    (pager,) = http.get(ns("other", "/entities"), params={"name": "Pager"}).json()["entities"]
    first = http.get(ns("other", "/facts"), params={"subject": pager["id"], "limit": 2}).json()
    assert len(first["facts"]) == 2 and first["next_cursor"]
    params = {"subject": pager["id"], "limit": 2, "cursor": first["next_cursor"]}
    last = http.get(ns("other", "/facts"), params=params).json()
    assert len(last["facts"]) == 1 and last["next_cursor"] is None
    assert {f["object"] for f in first["facts"] + last["facts"]} == {f["object"] for f in facts}
    for bad, param in (({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"cursor": "x"}, "cursor")):
        r = http.get(ns("other", "/facts"), params={"subject": pager["id"], **bad})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


BAD = [
    ("post", ns("wiki", "/documents"), {"text": ""}, 400, "text"),
    ("post", ns("wiki", "/documents"), {"text": "   "}, 400, "text"),
    ("post", ns("wiki", "/documents"), {"text": "word " * 60_000}, 400, "text"),
    ("post", ns("wiki", "/documents"), {"text": "ok", "colour": "red"}, 400, "colour"),
    ("post", ns("wiki", "/documents"), {"text": "ok", "reference_time": "yesterday"}, 400, "reference_time"),
    (
        "post",
        ns("wiki", "/documents"),
        {"text": "ok", "reference_time": "2020-01-01T00:00:00"},
        400,
        "reference_time",
    ),
    ("post", ns("nowhere", "/documents"), {"text": "ok"}, 404, "namespace"),
    ("post", ns("wiki", "/documents/batch"), {"documents": []}, 400, "documents"),
    ("post", ns("wiki", "/documents/batch"), {"documents": [{"text": "ok"}] * 51}, 400, "documents"),
    (
        "post",
        ns("wiki", "/documents/batch"),
        {"documents": [{"text": "ok"}, {"text": ""}]},
        400,
        "documents.1.text",
    ),
    (
        "post",
        ns("wiki", "/facts"),
        {"facts": [{"subject": "", "predicate": "p", "object": "o"}]},
        400,
        "facts.0.subject",
    ),
    (  # a blank sentence was stored, answered 500, and stopped the shard from starting again
        "post",
        ns("wiki", "/facts"),
        {"facts": [{"subject": "a", "predicate": "p", "object": "o", "sentence": " "}]},
        400,
        "facts.0.sentence",
    ),
    (
        "post",
        ns("wiki", "/facts"),
        {"facts": [{"subject": "a", "predicate": "p", "object": "o", "valid_at": "2020-13-01T00:00:00Z"}]},
        400,
        "facts.0.valid_at",
    ),
    ("post", ns("wiki", "/facts/nofact/invalidate"), {}, 404, "fact"),
    ("get", ns("wiki", "/documents/nodoc"), None, 404, "document"),
    ("delete", ns("wiki", "/documents/nodoc"), None, 404, "document"),
    ("get", ns("wiki", "/entities/noentity"), None, 404, "entity"),
    ("get", ns("wiki", "/entities/noentity/neighbours"), None, 404, "entity"),
    ("get", ns("wiki", "/entities/noentity/neighbours?depth=9"), None, 400, "depth"),
    ("get", ns("wiki", "/facts?subject=x&as_of=not-a-date"), None, 400, "as_of"),
    ("get", ns("wiki", "/facts"), None, 400, "subject"),
    ("get", ns("wiki", "/jobs/nojob"), None, 404, "job"),
    ("post", "/search", {"query": ""}, 400, "query"),
    ("post", "/search", {"query": "q", "k": 0}, 400, "k"),
    ("post", "/search", {"query": "q", "k": 101}, 400, "k"),
    ("post", "/search", {"query": "q", "depth": 4}, 400, "depth"),
    ("post", "/search", {"query": "q", "mode": "everything"}, 400, "mode"),
    ("post", "/search", {"query": "q", "as_of": "2020-02-30T00:00:00Z"}, 400, "as_of"),
    ("post", "/search", {"query": "q", "namespaces": ["nowhere"]}, 404, "namespace"),
    ("post", "/search", {"query": "q", "filters": {"year": {"$near": 1}}}, 400, "filters.year"),
    ("post", "/search", {"query": "q", "filters": {"year": {"$gt": "x"}}}, 400, "filters.year.$gt"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param"), BAD, ids=[f"{b[0]} {b[1]} {b[4]}" for b in BAD]
)
def test_bad_input_is_a_4xx_naming_the_field_and_changes_nothing(wiki, method, path, body, status, param):
    before = wiki.get(ns("wiki")).json()
    r = wiki.request(method.upper(), path, json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    after = wiki.get(ns("wiki")).json()
    assert {k: after[k] for k in ("documents", "entities", "facts")} == {
        k: before[k] for k in ("documents", "entities", "facts")
    }


@pytest.mark.parametrize("body", [b"{not json", b"\x85\xd9\xad\xf3F"])  # the second is not UTF-8
def test_a_body_that_is_not_json_is_a_400_in_the_openai_shape(http, body):
    r = http.post("/search", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_the_openapi_schema_describes_every_route(http, config):
    schema = httpx.get(http.base_url.copy_with(path=f"{PREFIX}/openapi.json")).json()
    paths = schema["paths"]
    assert {"/v1/search", "/v1/namespaces", "/v1/namespaces/{namespace}/documents/batch"} <= set(paths)
    assert {"get", "delete"} <= set(paths["/v1/namespaces/{namespace}/documents/{document_id}"])
    assert "SearchBody" in schema["components"]["schemas"] and "Fact" in schema["components"]["schemas"]


def test_the_llm_extractor_reads_through_the_ai_service_from_a_scripted_provider(serve_port, tmp_path):
    from ray import serve

    text = "Grace Hopper worked for the US Navy. She was born in New York."
    answer = {
        "entities": [{"name": "Grace Hopper", "type": "PERSON"}, {"name": "US Navy", "type": "ORG"}],
        "facts": [
            {
                "subject": "Grace Hopper",
                "subject_type": "PERSON",
                "predicate": "works for",
                "object": "US Navy",
                "object_type": "ORG",
            },
            {
                "subject": "Grace Hopper",
                "subject_type": "PERSON",
                "predicate": "born_in",
                "object": "New York",
                "object_type": "GPE",
            },
        ],
    }
    provider = ScriptedProvider()
    provider.respond = lambda body: json.dumps(answer) if text in body["messages"][-1]["content"] else "{}"
    remote = {"scripted": {"base_url": provider.url, "model": "extractor-v1"}}
    ai = AIServiceConfig(
        port=serve_port,
        route_prefix="/facts-llm-ai",
        providers=remote,
        embeddings=None,
        auth={"enabled": False},
    )
    facts = FactsServiceConfig(
        auth={"enabled": False},
        port=serve_port,
        route_prefix="/facts-llm",
        path=str(tmp_path),
        ai_url=deploy(ai, app_name="facts-llm-ai"),
        namespaces={"notes": {"extractor": "llm", "llm_model": "scripted", "num_cpus": 0}},
    )
    try:
        with httpx.Client(base_url=deploy(facts, app_name="facts-llm"), timeout=60) as http:
            http.post(ns("notes", "/documents"), json={"id": "hopper", "text": text}).raise_for_status()
            assert wait_until(lambda: extracted(http, "notes", "hopper"), 60)["extraction"] == "done"
            (hopper,) = http.get(ns("notes", "/entities"), params={"name": "Grace Hopper"}).json()["entities"]
            found = http.get(ns("notes", "/facts"), params={"subject": hopper["id"]}).json()["facts"]
            assert {(f["predicate"], f["object"], f["extractor"]) for f in found} == {
                ("works_for", "US Navy", "llm"),
                ("born_in", "New York", "llm"),
            }
            graph = search(http, "Where was Grace Hopper born?", mode="graph")
            assert graph["seeds"] == [hopper["id"]]  # from the names it holds: no model call
        # The AI service routed the extractor's model name to the provider's own.
        assert [r["model"] for r in provider.requests] == ["extractor-v1"]
    finally:
        serve.delete("facts-llm")
        serve.delete("facts-llm-ai")
        provider.close()
