import pytest

from models._private.retrieval.fusion import fuse

DENSE = [("a", 0.9), ("b", 0.8), ("c", 0.1)]
LEXICAL = [("c", 12.0), ("a", 6.0), ("d", 3.0)]


def test_rrf_sums_reciprocal_ranks():
    hits = fuse({"dense": DENSE, "lexical": LEXICAL}, "rrf", rrf_k=60)
    assert [h.id for h in hits] == ["a", "c", "b", "d"]
    assert hits[0].score == pytest.approx(1 / 61 + 1 / 62)
    assert hits[0].ranks == {"dense": 1, "lexical": 2} and hits[0].scores == {"dense": 0.9, "lexical": 6.0}


def test_weighted_fusion_normalises_each_list_then_weighs_it():
    hits = fuse({"dense": DENSE, "lexical": LEXICAL}, "weighted", {"dense": 0.5, "lexical": 0.5})
    scores = {h.id: h.score for h in hits}
    assert scores["a"] == pytest.approx(0.5 * 1.0 + 0.5 * (6 - 3) / 9)
    assert scores["c"] == pytest.approx(0.5 * 0.0 + 0.5 * 1.0)
    assert scores["d"] == pytest.approx(0.0)
    assert scores["b"] == pytest.approx(0.5 * (0.8 - 0.1) / 0.8)
    assert [h.id for h in hits] == ["a", "c", "b", "d"]


def test_weights_can_switch_one_side_off():
    hits = fuse({"dense": DENSE, "lexical": LEXICAL}, "weighted", {"dense": 1.0, "lexical": 0.0})
    assert [h.id for h in hits][:2] == ["a", "b"]
    assert "lexical" in hits[3].ranks  # still reported where it came from


def test_empty_lists_fuse_to_nothing():
    assert fuse({"dense": [], "lexical": []}) == []
