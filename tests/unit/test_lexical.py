import pytest

from models._private.retrieval.lexical import LexicalIndex

DOCS = [
    ("a", "s1", "long", "Vitamin D deficiency is linked to bone fractures in older adults."),
    ("b", "s1", "long", "Bone density improves with resistance training."),
    ("c", "s1", "short", "Fractures heal slower in smokers."),
    ("d", "s2", "long", "Vitamin C does not prevent the common cold."),
    ("e", "s2", "long", "Deficiency of iron causes anemia."),
]


@pytest.fixture
def index():
    idx = LexicalIndex()
    idx.upsert(DOCS)
    yield idx
    idx.close()


def ids(hits):
    return [i for i, _ in hits]


def same_ranking(got, want):
    assert ids(got) == ids(want)
    assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-5)


def test_bm25_ranks_the_matching_documents(index):
    hits = index.search("vitamin deficiency fractures", 5)
    assert ids(hits)[0] == "a"
    assert set(ids(hits)) == {"a", "c", "d", "e"}  # b shares no term with the query
    assert all(s > 0 for _, s in hits) and hits == sorted(hits, key=lambda h: -h[1])


def test_stemming_and_stop_words(index):
    assert ids(index.search("fracture", 5))[:2] in (["c", "a"], ["a", "c"])  # fractures ~ fracture
    assert index.search("the of is", 5) == []  # nothing but stop words


def test_namespace_and_tier_filters(index):
    assert set(ids(index.search("vitamin deficiency", 5, namespaces=["s2"]))) == {"d", "e"}
    assert ids(index.search("fractures", 5, tiers=["short"])) == ["c"]


def test_query_syntax_is_taken_as_text(index):
    assert ids(index.search('bone AND ("fractures" OR) ns:s2 [', 5))  # no exception, still matches


def test_adds_are_scored_as_a_fresh_index_would(index):
    index.upsert([("f", "s1", "long", "Vitamin K and bone health.")])
    fresh = LexicalIndex()
    fresh.upsert([*DOCS, ("f", "s1", "long", "Vitamin K and bone health.")])
    same_ranking(index.search("vitamin bone", 10), fresh.search("vitamin bone", 10))


def test_deleted_documents_never_match_and_rebuild_makes_scores_exact(index):
    index.delete(["a"])
    assert "a" not in ids(index.search("vitamin deficiency fractures", 10))
    live = [d for d in DOCS if d[0] != "a"]
    fresh = LexicalIndex()
    fresh.upsert(live)
    assert index.stale
    index.rebuild(live)
    assert not index.stale
    same_ranking(
        index.search("vitamin deficiency fractures", 10), fresh.search("vitamin deficiency fractures", 10)
    )


def test_update_replaces_the_text(index):
    index.upsert([("b", "s1", "long", "Sleep and memory consolidation.")])
    assert "b" not in ids(index.search("bone density", 10))
    assert ids(index.search("sleep memory", 10)) == ["b"]
    assert index.num_docs == 5 and index.deleted_since_build == 1  # the old version is stale weight


def test_on_disk_index_reopens_with_its_documents(tmp_path):
    idx = LexicalIndex(str(tmp_path / "bm25"))
    idx.upsert(DOCS)
    idx.close()
    again = LexicalIndex(str(tmp_path / "bm25"))
    assert ids(again.search("anemia iron", 3)) == ["e"]


class Killed(BaseException):
    """The process dying where it is raised: nothing after it runs, no cleanup but the OS's."""


def dying_after(docs, n):
    for i, doc in enumerate(docs):
        if i == n:
            raise Killed
        yield doc


def test_a_rebuild_that_dies_while_it_writes_leaves_the_old_index_whole(tmp_path):
    idx = LexicalIndex(str(tmp_path / "bm25"))
    idx.upsert(DOCS)
    with pytest.raises(Killed):
        idx.rebuild(dying_after(DOCS[1:], 2))
    assert ids(idx.search("anemia iron", 3)) == ["e"]  # this process still searches the old index
    idx.close()
    again = LexicalIndex(str(tmp_path / "bm25"))
    assert again.num_docs == 5 and ids(again.search("vitamin deficiency fractures", 1)) == ["a"]
    again.rebuild(DOCS[1:])  # the next rebuild completes and leaves one generation behind it
    again.close()
    assert LexicalIndex(str(tmp_path / "bm25")).num_docs == 4
    assert len([p for p in (tmp_path / "bm25").iterdir() if p.is_dir()]) == 1


def test_an_index_that_cannot_be_opened_starts_empty_and_says_it_must_be_rebuilt(tmp_path, caplog):
    idx = LexicalIndex(str(tmp_path / "bm25"))
    idx.upsert(DOCS)
    idx.close()
    for part in (tmp_path / "bm25").rglob("*.fieldnorm"):
        part.unlink()
    again = LexicalIndex(str(tmp_path / "bm25"))
    assert again.damaged and again.num_docs == 0
    assert "cannot be opened" in caplog.text
    again.rebuild(DOCS)
    assert not again.damaged and ids(again.search("anemia iron", 3)) == ["e"]


def test_writes_are_committed_together_by_the_next_search_which_sees_every_one():
    idx = LexicalIndex()
    before = idx.commits
    for doc in DOCS:
        idx.upsert([doc])
    idx.delete(["c"])
    assert idx.commits == before  # six writes, no commit yet
    assert set(ids(idx.search("vitamin deficiency fractures bone anemia", 10))) == {"a", "b", "d", "e"}
    assert idx.commits == before + 1  # the search committed all six at once
    idx.search("anemia", 3)
    assert idx.commits == before + 1  # nothing staged: nothing to commit
    idx.close()


def test_concurrent_writers_share_commits_and_every_document_is_found():
    import threading

    idx = LexicalIndex()
    writers, per_writer = 6, 30
    done = threading.Event()
    searches = []

    def write(w):
        for n in range(per_writer):
            idx.upsert([(f"w{w}-{n}", "s1", "long", f"token{w}x{n} shared words")])

    def search():  # a bounded number of searches, so that they cannot outnumber the writes
        while not done.is_set() and len(searches) < 20:
            idx.search("shared words", 5)
            searches.append(1)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    reader = threading.Thread(target=search)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()
    for w in range(writers):
        for n in range(per_writer):
            assert ids(idx.search(f"token{w}x{n}", 1)) == [f"w{w}-{n}"]
    # Only searches commit, each one every write staged before it.
    assert idx.commits <= len(searches) + 1 < writers * per_writer
    assert idx.num_docs == writers * per_writer
    idx.close()
