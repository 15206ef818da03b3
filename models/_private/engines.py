"""`create_engine`: the one place that knows every engine implementation and picks one.

It lives apart from `engine.py` because the implementations import their base from there; a
factory beside the base would close an import circle.
"""

from __future__ import annotations

from models._private.engine import Engine, EngineConfig, resolve_engine_kind
from models._private.hf_engine import TransformersEngine

__all__ = ["create_engine"]


def create_engine(source: str, config: EngineConfig | None = None) -> Engine:
    """Loads the model at `source` (a local path or hub id) in the engine `config` names.

    Raises:
        EngineUnavailableError: vLLM was asked for where it cannot run.
    """
    config = config or EngineConfig()
    if resolve_engine_kind(config.kind) == "vllm":
        # Imported only when asked for, as vLLM itself is optional (the `gpu` extra).
        from models._private.vllm_engine import VLLMEngine

        return VLLMEngine(source, config)
    return TransformersEngine(source, config)
