"""Property-based fuzzing of both services' OpenAPI schemas with schemathesis, over real HTTP
with auth on (benchmarks/_fuzz.py has the rules each request is held to).

The suite runs the same fuzzing briefly (tests/serve/test_fuzz.py); this runs it longer:
`--examples` positive cases per operation (and half as many negative ones), each sent with an
admin key, with no key or an unknown one, and with a key out of scope. It prints the counts of
each kind of problem; every one should be 0.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import ray

from benchmarks._common import emit
from benchmarks._fuzz import Tally, deploy_targets, fuzz, remove_targets

SYSTEM = "fuzz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=200, help="Positive cases per operation.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as directory:
        targets = deploy_targets(SYSTEM, args.port, directory)
        total, result = Tally(), {"examples_per_operation": args.examples}
        start = time.perf_counter()
        for name, target in targets.items():
            t = time.perf_counter()
            tally = fuzz(target, args.examples, seed_value=args.seed)
            result[f"{name}_requests_per_s"] = tally.requests / (time.perf_counter() - t)
            for problem in tally.examples:
                print(f"{name}: {problem}")
            for k, v in tally.figures().items():
                setattr(total, k, getattr(total, k) + v)
        result["seconds"] = time.perf_counter() - start
        remove_targets(SYSTEM)
    ray.shutdown()
    emit({**result, **total.figures()})


if __name__ == "__main__":
    main()
