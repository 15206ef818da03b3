"""Models: the embedder, the dense (FAISS) and lexical (BM25) indexes, and rank fusion.

The hybrid memory built on them, and the inference engines, come with their issues.
"""

from models._private.dense import DenseIndex
from models._private.embedder import Embedder, EmbedderConfig, default_model_path
from models._private.fusion import Fused, fuse
from models._private.lexical import LexicalIndex

__all__ = ["DenseIndex", "Embedder", "EmbedderConfig", "Fused", "LexicalIndex", "default_model_path", "fuse"]
