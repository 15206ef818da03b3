"""Models: the embedder, the dense (FAISS) and lexical (BM25) indexes, rank fusion, the
hybrid memory built on them (tiers, namespaces, persistence), the facts store (documents,
entities and bi-temporal facts in SQLite), and the inference engines (vLLM on GPUs,
transformers on CPUs) behind one interface.
"""

from models._private.core.breaker import CircuitBreakerConfig
from models._private.core.resources import ResourcesConfig
from models._private.dense import DenseIndex
from models._private.embedder import Embedder, EmbedderConfig, default_model_path
from models._private.engine import Delta, Engine, EngineConfig, Generation, SamplingParams
from models._private.engines import create_engine
from models._private.facts import FactHit, FactsBase, PassageHit, SearchResult
from models._private.facts_extract import SpacyExtractor
from models._private.facts_llm import LLMExtractor
from models._private.facts_schema import (
    Document,
    DocumentIn,
    Entity,
    EntityMention,
    Extraction,
    Fact,
    FactIn,
    FactsConfig,
    Span,
)
from models._private.facts_store import FactStore
from models._private.fusion import Fused, fuse
from models._private.lexical import LexicalIndex
from models._private.memory import HybridMemory
from models._private.memory_schema import TIERS, Hit, MemoryConfig, Record
from models._private.smoke import build_tiny_model

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
