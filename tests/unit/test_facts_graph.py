"""Personalised PageRank over documents and entities, on small graphs worked out by hand."""

import pytest

from models._private.facts.pagerank import DocumentGraph


def test_the_walk_stays_near_where_it_starts():
    # d1 mentions A; A shares a fact with B; d2 mentions B; d3 mentions C, which nothing links.
    graph = DocumentGraph([("d1", "A"), ("d2", "B"), ("d3", "C")], [("A", "B")])
    ranks = graph.rank({"A": 1.0}, {})
    assert ranks["d1"] > ranks["d2"] > 0 and "d3" not in ranks
    assert graph.rank({"nobody": 1.0}, {}) == {}


def test_a_start_document_passes_its_weight_to_the_documents_beside_it():
    graph = DocumentGraph([("d1", "A"), ("d2", "A"), ("d3", "B")], [])
    ranks = graph.rank({}, {"d1": 1.0})
    assert ranks["d1"] > ranks["d2"] > 0 and "d3" not in ranks
    # Damping 0.5: half the walk restarts at d1, the rest goes d1 -> A -> d1 or d2 and back.
    assert ranks["d1"] + ranks["d2"] == pytest.approx(2 / 3)
