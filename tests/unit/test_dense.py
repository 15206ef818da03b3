import numpy as np
import pytest

from models._private.retrieval.dense import DenseIndex


def unit(n, dim=16, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def brute_force(ids, vecs, q, k):
    scores = vecs @ q
    order = np.argsort(-scores)[:k]
    return list(ids[order])


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_search_finds_the_nearest_vectors(kind):
    vecs = unit(500)
    ids = np.arange(1000, 1500)
    index = DenseIndex(16, kind, ivf_lists=8, ivf_probe=8)
    index.upsert(ids, vecs)
    got, scores = index.search(vecs[7], 5)
    assert got[0] == 1007 and scores[0] == pytest.approx(1.0, abs=1e-5)
    assert list(got) == brute_force(ids, vecs, vecs[7], 5)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_deleted_vectors_never_come_back(kind):
    vecs = unit(200, seed=1)
    ids = np.arange(200)
    index = DenseIndex(16, kind, ivf_lists=4, ivf_probe=4)
    index.upsert(ids, vecs)
    assert index.remove([5, 6, 7]) == 3 and len(index) == 197
    for i in (5, 6, 7):
        got, _ = index.search(vecs[i], 200)
        assert i not in set(got) and len(got) == 197
    live_ids, live_vecs = index.vectors()
    assert 5 not in set(live_ids) and len(live_vecs) == 197


def test_hnsw_rebuilds_once_tombstones_pile_up_and_stays_exact_over_live_vectors():
    vecs = unit(100, seed=2)
    index = DenseIndex(16, "hnsw", rebuild_ratio=0.2)
    index.upsert(np.arange(100), vecs)
    index.remove(list(range(0, 15)))
    assert len(index._dead) == 15  # below a fifth: tombstones only
    index.remove(list(range(15, 25)))
    assert len(index._dead) == 0 and index._index.ntotal == 75  # rebuilt from the live vectors
    got, _ = index.search(vecs[3], 10)
    assert not set(got) & set(range(25))


def test_upsert_replaces_a_vector():
    vecs = unit(10, seed=3)
    for kind in ("flat", "hnsw"):
        index = DenseIndex(16, kind)
        index.upsert(np.arange(10), vecs)
        index.upsert(np.array([4]), vecs[9:10])
        got, _ = index.search(vecs[4], 10)
        assert 4 not in set(got[:1]) and len(index) == 10


def test_wrong_vector_size_is_refused_and_changes_nothing():
    index = DenseIndex(16)
    index.upsert(np.arange(3), unit(3))
    with pytest.raises(ValueError, match=r"shape \(n, 16\)"):
        index.upsert(np.arange(3, 5), np.zeros((2, 8), dtype=np.float32))
    assert len(index) == 3


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_saved_and_loaded_index_answers_searches_identically(kind, tmp_path):
    vecs = unit(300, seed=4)
    index = DenseIndex(16, kind)
    index.upsert(np.arange(300), vecs)
    index.remove([17])  # a tombstone, for hnsw: saving rebuilds the graph without it
    index.save(str(tmp_path), "s1")
    assert sorted(p.name for p in tmp_path.iterdir()) == (
        ["dense-s1.faiss", "dense-s1.labels.npy"] if kind == "hnsw" else []
    )
    # The caller keeps the vectors, in an order of its own: load maps them to the saved graph.
    ids, live = index.vectors()
    shuffle = np.random.default_rng(5).permutation(len(ids))
    loaded = DenseIndex.load(str(tmp_path), "s1", ids[shuffle], live[shuffle], 16, kind)
    assert len(loaded) == len(index) == 299
    if kind == "hnsw":  # the saved graph is taken as it is, not rebuilt from the shuffled vectors
        np.testing.assert_array_equal(loaded.vectors()[0], ids)
    for q in [*vecs[:20], *unit(10, seed=6)]:
        got, scores = index.search(q, 50)
        again, again_scores = loaded.search(q, 50)
        assert 17 not in set(again)
        np.testing.assert_array_equal(again, got)
        np.testing.assert_array_equal(again_scores, scores)
    # The loaded index stays writable like the original.
    assert loaded.remove([3]) == index.remove([3]) == 1
    np.testing.assert_array_equal(loaded.search(vecs[3], 20)[0], index.search(vecs[3], 20)[0])


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_updating_one_id_again_and_again_holds_a_bounded_number_of_rows(kind):
    vecs = unit(400, seed=5)
    index = DenseIndex(16, kind, ivf_lists=4, ivf_probe=4)
    index.upsert(np.arange(100), vecs[:100])
    for n in range(300):  # the same ten ids, updated one at a time
        index.upsert(np.array([n % 10]), vecs[100 + n : 101 + n])
    assert len(index) == 100
    assert index.stored_rows <= 100 * (1 + index.rebuild_ratio) + 1  # not one row per update
    live_ids, live_vecs = index.vectors()
    assert sorted(live_ids) == list(range(100))
    got, _ = index.search(vecs[399], 1)  # id 9's last vector
    assert list(got) == [9]
    assert np.allclose(live_vecs[list(live_ids).index(9)], vecs[399])
