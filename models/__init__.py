"""Models: the embedder, the dense (FAISS) and lexical (BM25) indexes, rank fusion, the
hybrid memory built on them (tiers, namespaces, persistence), the facts store (documents,
entities and bi-temporal facts in SQLite), and the inference engines (vLLM on GPUs,
transformers on CPUs) behind one interface.
"""

from models._private.core.lazy import lazy_exports

# Imported on first use: the exception tree and env getters under `models._private.core` are
# imported by every process (the `swarm` CLI too), which must not pay for FAISS and torch.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "models._private.core.breaker": ("CircuitBreakerConfig",),
        "models._private.core.resources": ("ResourcesConfig",),
        # retrieval
        "models._private.retrieval.embedder": ("Embedder", "EmbedderConfig", "default_model_path"),
        "models._private.retrieval.dense": ("DenseIndex",),
        "models._private.retrieval.lexical": ("LexicalIndex",),
        "models._private.retrieval.fusion": ("Fused", "fuse"),
        # memory
        "models._private.memory.hybrid": ("HybridMemory",),
        "models._private.memory.schema": ("TIERS", "Hit", "MemoryConfig", "Record"),
        # facts
        "models._private.facts.base": ("FactsBase",),
        "models._private.facts.search": ("FactHit", "PassageHit", "SearchResult"),
        "models._private.facts.schema": (
            "Document",
            "DocumentIn",
            "Entity",
            "EntityMention",
            "Extraction",
            "Fact",
            "FactIn",
            "FactsConfig",
            "Span",
        ),
        "models._private.facts.store.core": ("FactStore",),
        "models._private.facts.spacy_extractor": ("SpacyExtractor",),
        "models._private.facts.llm_extractor": ("LLMExtractor",),
        # engines
        "models._private.engines.base": ("Delta", "Engine", "EngineConfig", "Generation", "SamplingParams"),
        "models._private.engines.factory": ("create_engine",),
        "models._private.engines.tiny_model": ("build_tiny_model",),
    },
)

__all__ = [
    "TIERS",
    "CircuitBreakerConfig",
    "Delta",
    "DenseIndex",
    "Document",
    "DocumentIn",
    "Embedder",
    "EmbedderConfig",
    "Engine",
    "EngineConfig",
    "Entity",
    "EntityMention",
    "Extraction",
    "Fact",
    "FactHit",
    "FactIn",
    "FactStore",
    "FactsBase",
    "FactsConfig",
    "Fused",
    "Generation",
    "Hit",
    "HybridMemory",
    "LLMExtractor",
    "LexicalIndex",
    "MemoryConfig",
    "PassageHit",
    "Record",
    "ResourcesConfig",
    "SamplingParams",
    "SearchResult",
    "SpacyExtractor",
    "Span",
    "build_tiny_model",
    "create_engine",
    "default_model_path",
    "fuse",
]
