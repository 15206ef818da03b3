"""The facts library: `FactsBase` (`base`), one namespace's documents, entities and facts,
searchable, with its search and result shapes (`search`) and its index of passages and fact
sentences in a hybrid memory (`index`); the SQLite `FactStore` (`store/`); the pydantic shapes
(`schema`); the spaCy and the model-backed extractors (`spacy_extractor`, `llm_extractor`); name
resolution (`resolution`); and personalised PageRank over documents and entities (`pagerank`).

Nothing is re-exported here, so that importing the schema does not import the memory (the
public names are in `models`).
"""
