"""Models: the embedder, the dense (FAISS) and lexical (BM25) indexes, rank fusion, and the
hybrid memory built on them (tiers, namespaces, persistence). Inference engines come next.
"""

from models._private.dense import DenseIndex
from models._private.embedder import Embedder, EmbedderConfig, default_model_path
from models._private.fusion import Fused, fuse
from models._private.lexical import LexicalIndex
from models._private.memory import TIERS, Hit, HybridMemory, MemoryConfig, Record

__all__ = [
    "TIERS",
    "DenseIndex",
    "Embedder",
    "EmbedderConfig",
    "Fused",
    "Hit",
    "HybridMemory",
    "LexicalIndex",
    "MemoryConfig",
    "Record",
    "default_model_path",
    "fuse",
]
