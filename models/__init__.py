"""Models: the embedder, the dense (FAISS) and lexical (BM25) indexes, rank fusion, the
hybrid memory built on them (tiers, namespaces, persistence), and the inference engines
(vLLM on GPUs, transformers on CPUs) behind one interface.
"""

from models._private.core.breaker import CircuitBreakerConfig
from models._private.core.resources import ResourcesConfig
from models._private.dense import DenseIndex
from models._private.embedder import Embedder, EmbedderConfig, default_model_path
from models._private.engine import Delta, Engine, EngineConfig, Generation, SamplingParams
from models._private.engines import create_engine
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
    "Embedder",
    "EmbedderConfig",
    "Engine",
    "EngineConfig",
    "Fused",
    "Generation",
    "Hit",
    "HybridMemory",
    "LexicalIndex",
    "MemoryConfig",
    "Record",
    "ResourcesConfig",
    "SamplingParams",
    "build_tiny_model",
    "create_engine",
    "default_model_path",
    "fuse",
]
