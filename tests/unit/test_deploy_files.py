"""The cluster files a user deploys with: ray-cluster.yaml against the autoscaler's own checks,
and the KubeRay RayService against Serve's schema and the resources its models ask for."""

import copy
import json

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import ServeDeploySchema

from actors._private.node_types import node_type_that_fits, node_types_of
from cluster import load_config
from models._private.core.resources import scheduler_demand
from serve import AIAppArgs, FactsAppArgs
from tests.conftest import ROOT

CLUSTER = ROOT / "ray-cluster.yaml"
RAYSERVICE = ROOT / "deploy" / "kuberay" / "rayservice.yaml"


def _cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_the_cluster_launcher_config_passes_the_autoscalers_own_validation():
    validate_config(prepare_config(_cluster()))  # as `ray up` does, without reaching AWS
    broken = _cluster()
    broken["available_node_types"]["gpu_worker"]["resources"] = {"GPU": 0.5}  # whole numbers only
    with pytest.raises(Exception, match=r"0\.5 is not of type 'integer'"):
        validate_config(prepare_config(broken))


def test_the_cluster_launcher_config_declares_what_each_node_type_offers():
    types = _cluster()["available_node_types"]
    # Declared rather than looked up in EC2, so the autoscaler can place GPU replicas offline.
    assert types["gpu_worker"]["resources"]["GPU"] == 1
    assert types["gpu_worker"]["resources"]["accelerator_type:A10G"] == 1
    # Only the head offers `control`: control_resources keep the state-holding actors there.
    assert [name for name, t in types.items() if "control" in t["resources"]] == [
        _cluster()["head_node_type"]
    ]
    # The dashboard's Jobs API runs any code: never published beyond the head's loopback.
    start = " ".join(_cluster()["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start


def _rayservice() -> dict:
    (service, _volume) = yaml.safe_load_all(RAYSERVICE.read_text())
    return service


def _apps() -> dict:
    serve_config = yaml.safe_load(_rayservice()["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config)
    return {a["name"]: a for a in serve_config["applications"]}


def test_the_rayservice_runs_the_serve_config_files_applications_with_token_auth():
    service = _rayservice()
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    assert service["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token"}
    file_apps = {
        a["name"]: a for a in yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())["applications"]
    }
    apps = _apps()
    assert {n: (a["import_path"], a["route_prefix"]) for n, a in apps.items()} == {
        n: (a["import_path"], a["route_prefix"]) for n, a in file_apps.items()
    }
    # The same facts service, its state pinned to the head, which alone offers `control`.
    facts = dict(apps["swarmray-facts"]["args"])
    assert facts.pop("control_resources") == {"control": 0.001}
    assert facts == file_apps["swarmray-facts"]["args"]
    ai = AIAppArgs.model_validate(apps["swarmray-ai"]["args"])
    assert ai.control_resources == {"control": 0.001}
    assert (
        FactsAppArgs.model_validate(apps["swarmray-facts"]["args"]).control_resources == ai.control_resources
    )


def _quantity(text: str | int) -> float:
    """A Kubernetes quantity: 8, 500m, 32Gi."""
    text = str(text)
    for suffix, scale in (("m", 1e-3), ("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30), ("Ti", 2**40)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)


def _offers(group: dict) -> dict[str, float]:
    """What Ray sees on a pod of the group: its container's limits, overridden by rayStartParams."""
    (container,) = group["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    params = group["rayStartParams"]
    return {
        "CPU": _quantity(params.get("num-cpus", limits.get("cpu", 0))),
        "GPU": _quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0))),
        "memory": _quantity(limits.get("memory", 0)),
    }


def _fits(cluster: dict) -> dict[str, list[str]]:
    """Model -> the worker groups one of its replicas fits on."""
    groups = {g["groupName"]: _offers(g) for g in cluster["workerGroupSpecs"]}
    ai = AIAppArgs.model_validate(_apps()["swarmray-ai"]["args"]).service()
    out = {}
    for name, model in ai.models.items():
        r = model.resources
        gpus = (r.num_gpus or 0) * model.engine.tensor_parallel_size
        need = {"CPU": r.num_cpus or 0, "GPU": gpus, "memory": (r.memory_mb or 0) * 2**20}
        out[name] = [g for g, offer in groups.items() if all(offer[k] >= v for k, v in need.items())]
    return out


def test_every_model_replica_fits_a_worker_group_and_gpu_models_only_the_gpu_group():
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    assert _fits(cluster) == {"qwen2.5-7b-instruct": ["gpu"], "smollm2-135m-instruct": ["cpu", "gpu"]}
    assert _offers(cluster["headGroupSpec"])["CPU"] == 0  # nothing but control and state there
    assert "control" in cluster["headGroupSpec"]["rayStartParams"]["resources"]
    for g in cluster["workerGroupSpecs"]:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]


def test_the_fit_check_finds_a_gpu_model_that_no_group_can_hold():
    cluster = copy.deepcopy(_rayservice()["spec"]["rayClusterConfig"])
    cluster["workerGroupSpecs"] = [g for g in cluster["workerGroupSpecs"] if g["groupName"] != "gpu"]
    assert _fits(cluster)["qwen2.5-7b-instruct"] == []
    cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "500m"
    assert _fits(cluster)["smollm2-135m-instruct"] == []


def test_the_cluster_recipe_pins_all_state_to_what_only_the_head_offers_and_journals_remotely():
    config = load_config(ROOT / "configs" / "cluster.yaml")
    wanted = config.control_resources
    assert wanted and config.ai.control_resources == wanted and config.facts.control_resources == wanted
    head = _cluster()["available_node_types"][_cluster()["head_node_type"]]["resources"]
    assert all(head.get(name, 0) >= amount for name, amount in wanted.items())
    kuberay_head = _rayservice()["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]
    assert all(name in kuberay_head["resources"] for name in wanted)
    assert all(uri.startswith("s3://") for uri in config.journal_locations().values())
    stores = [config.global_memory, *(s.memory for s in config.swarms.values() if s.memory)]
    assert len(stores) == 2 and all(m.memory.path.startswith("s3://") for m in stores)
    # Every GPU model asks for what the launcher's GPU nodes offer.
    gpu_node = _cluster()["available_node_types"]["gpu_worker"]["resources"]
    for model in config.ai.models.values():
        if model.resources.num_gpus:
            assert gpu_node["GPU"] >= model.resources.num_gpus
            assert gpu_node.get(f"accelerator_type:{model.resources.accelerator_type}") == 1


def test_a_services_own_control_resources_win_over_the_systems():
    data = yaml.safe_load((ROOT / "configs" / "cluster.yaml").read_text())
    data["facts"]["control_resources"] = {"facts": 1}
    config = load_config(data)
    assert config.facts.control_resources == {"facts": 1}
    assert config.ai.control_resources == config.control_resources


def test_the_recipes_cpu_pools_hold_cpu_agents_which_only_the_head_and_cpu_workers_offer():
    types = _cluster()["available_node_types"]
    head = types[_cluster()["head_node_type"]]["resources"]
    assert head["cpu_agents"] == head["CPU"] and types["cpu_worker"]["resources"]["cpu_agents"] == 8
    assert "cpu_agents" not in types["gpu_worker"]["resources"]
    config = load_config(ROOT / "configs" / "cluster.yaml")
    pools = [p for s in config.swarms.values() for p in s.pools.values() if not p.colocate]
    assert {p.name for p in pools} == {"stats", "memory", "validate"}
    for pool in pools:
        # Held while the host runs (no CPU is), so a backlog is demand the autoscaler sees.
        assert scheduler_demand(pool.resources.ray_options()) == {"cpu_agents": 1}, pool.name
    # The node type the autoscaler adds for them, as a pool reads it from the launcher file.
    assert node_type_that_fits({"cpu_agents": 1}, node_types_of(_cluster())) == "cpu_worker"
    # Their minimum fits the head, so idle workers can all be given back.
    hosts = sum(-(-p.min_agents // p.agents_per_actor) for p in pools)
    assert hosts <= head["cpu_agents"]
    stats = config.swarms["ai"].pools["stats"]
    assert stats.max_agents > head["cpu_agents"]  # so its backlog reaches the cpu_workers
    # On KubeRay too: the CPU group offers them, one a CPU, and the GPU group none.
    groups = {g["groupName"]: g for g in _rayservice()["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    # rayStartParams' resources: a JSON object inside a quoted string, as `ray start` takes it.
    params = {name: g["rayStartParams"].get("resources", '"{}"') for name, g in groups.items()}
    offered = {name: json.loads(json.loads(value)) for name, value in params.items()}
    assert offered["cpu"] == {"cpu_agents": _offers(groups["cpu"])["CPU"]} and offered["gpu"] == {}
