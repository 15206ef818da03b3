"""Retrieval: the embedder (`embedder`), the dense FAISS index (`dense`), the lexical BM25
index on tantivy (`lexical`), and rank fusion of their results (`fusion`).

Nothing is re-exported here, so that importing one of them does not import the others (the
public names are in `models`).
"""
