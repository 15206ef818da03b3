"""GPU scheduling of model replicas on the session's 2 logical GPUs: fractional packing and the
placement-group path for tensor parallelism (the engine itself runs on CPU here)."""

import time

import pytest
import ray
from ray import serve

from models._private.core.names import deployment_name
from serve import AIServiceConfig, deploy


def replica_infos(app: str, model: str, replicas: int, timeout_s: float = 60) -> dict[int, dict]:
    """info() of each replica, keyed by process id (requests are spread over replicas)."""
    handle = serve.get_deployment_handle(deployment_name(model), app_name=app)
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < replicas and time.monotonic() < deadline:
        for info in [r.result() for r in [handle.info.remote() for _ in range(8)]]:
            seen[info["pid"]] = info
    return seen


@pytest.fixture
def one_app(serve_port):
    apps = []

    def run(name: str, models: dict) -> None:
        config = AIServiceConfig(
            port=serve_port, route_prefix=f"/{name}", models=models, embeddings=None, auth={"enabled": False}
        )
        deploy(config, app_name=name)
        apps.append(name)

    yield run
    for name in apps:
        serve.delete(name)


def test_half_gpu_replicas_pack_two_per_gpu(one_app, tiny_model):
    one_app(
        "gpu-pack",
        {
            "half": {
                "source": tiny_model,
                "resources": {"num_cpus": 0.5, "num_gpus": 0.5},
                "autoscaling": {"min_replicas": 2, "max_replicas": 2},
            }
        },
    )
    infos = replica_infos("gpu-pack", "half", 2)
    assert len(infos) == 2, infos
    gpus = [tuple(i["gpu_ids"]) for i in infos.values()]
    assert all(len(g) == 1 for g in gpus) and gpus[0] == gpus[1], f"both on one GPU: {gpus}"
    assert {i["engine"] for i in infos.values()} == {"TransformersEngine"}


def test_tensor_parallel_replica_gets_a_placement_group_of_gpu_bundles(one_app, tiny_model):
    one_app("gpu-tp", {"sharded": {"source": tiny_model, "engine": {"tensor_parallel_size": 2}}})
    (info,) = replica_infos("gpu-tp", "sharded", 1).values()
    pg_id = info["placement_group_id"]
    assert pg_id is not None
    table = ray.util.placement_group_table()[pg_id]
    assert table["state"] == "CREATED" and table["strategy"] == "STRICT_PACK"
    assert list(table["bundles"].values()) == [{"CPU": 1.0}, {"GPU": 1.0}, {"GPU": 1.0}]
