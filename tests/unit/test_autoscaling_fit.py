"""The fake cluster's node types and system are the repository's files, fitted to one machine by
fixed rules, so the files and the autoscaling tests cannot part."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from benchmarks._autoscaling import (
    FAKE_HEAD_TYPE,
    MAX_WORKERS_PER_TYPE,
    OBJECT_STORE_BYTES,
    FittedCluster,
    fitted_recipe,
    node_types_from,
)
from cluster import load_config
from tests.conftest import ROOT


def test_node_types_are_read_from_ray_cluster_yaml():
    launcher = yaml.safe_load((ROOT / "ray-cluster.yaml").read_text())
    types = launcher["available_node_types"]
    head, workers, top = node_types_from(cpus=4)
    assert head == {**types["head"]["resources"], "CPU": 4, "cpu_agents": 4}  # 8 -> 4, control kept
    assert sorted(workers) == sorted(n for n in types if n != launcher["head_node_type"])
    for name, fitted in workers.items():
        wanted = dict(types[name]["resources"])
        wanted["CPU"] = 4
        if "cpu_agents" in wanted:
            wanted["cpu_agents"] = 4
        assert fitted["resources"] == {**wanted, "object_store_memory": OBJECT_STORE_BYTES}
        assert fitted["max_workers"] == min(types[name]["max_workers"], MAX_WORKERS_PER_TYPE)
    assert "GPU" not in workers["cpu_worker"]["resources"]
    assert workers["gpu_worker"]["resources"]["accelerator_type:A10G"] == 1
    assert top["max_workers"] == sum(w["max_workers"] for w in workers.values())


def test_the_fitted_cluster_config_is_the_fake_providers_with_its_own_gcs():
    head, workers, top = node_types_from()
    cluster = FittedCluster(head, workers, **top)
    config = cluster._config
    assert config["provider"]["type"] == "fake_multinode"
    assert config["provider"]["gcs_address"] == cluster.address  # never another Ray's :6379
    assert config["head_node_type"] == FAKE_HEAD_TYPE
    assert config["available_node_types"][FAKE_HEAD_TYPE]["max_workers"] == 0
    assert config["max_workers"] == top["max_workers"]
    cluster.set_max_workers("cpu_worker", 0)
    written = json.loads(Path(cluster.config_path).read_text())
    assert written["available_node_types"]["cpu_worker"]["max_workers"] == 0
    shutil.rmtree(cluster.temp_dir)


def test_the_fitted_recipe_differs_from_configs_cluster_yaml_only_where_documented(tmp_path):
    recipe = yaml.safe_load((ROOT / "configs" / "cluster.yaml").read_text())
    fitted = fitted_recipe(tmp_path)
    load_config(fitted)  # a valid system
    assert "ai" not in fitted and "facts" not in fitted
    assert fitted["control_resources"] == recipe["control_resources"]
    assert fitted["registry"]["journal_uri"] == str(tmp_path / "journal")
    assert fitted["swarms"]["storage"]["memory"]["memory"]["path"] == str(tmp_path / "memory" / "storage")
    stats, original = fitted["swarms"]["ai"]["pools"]["stats"], recipe["swarms"]["ai"]["pools"]["stats"]
    assert {k: stats[k] for k in ("min_agents", "max_agents", "scale_up_backlog", "resources")} == {
        k: original[k] for k in ("min_agents", "max_agents", "scale_up_backlog", "resources")
    }
    # Everything else is the file's.
    for swarm in ("ai", "storage"):
        for name, pool in recipe["swarms"][swarm]["pools"].items():
            if name != "stats":
                assert fitted["swarms"][swarm]["pools"][name] == pool
    assert fitted["swarms"]["ai"]["pools"]["gpu"]["resources"]["accelerator_type"] == "A10G"
    assert fitted["swarms"]["edge"]["pools"]["h100"]["resources"]["accelerator_type"] == "H100"
