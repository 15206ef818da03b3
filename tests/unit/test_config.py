import subprocess
import sys

import pytest

from cluster import ConfigError, load_config
from models import ResourcesConfig
from tests.conftest import ROOT


def minimal(**swarm_overrides):
    swarm = {"pools": {"p": {"agent": {"class": "actors:TextStatsAgent"}}}}
    swarm.update(swarm_overrides)
    return {"swarms": {"s": swarm}}


def problems_of(data):
    with pytest.raises(ConfigError) as info:
        load_config(data)
    return dict(info.value.problems), str(info.value)


def test_local_config_swarms_have_three_to_five_distinct_agents():
    config = load_config(ROOT / "configs" / "local.yaml")
    assert {"ai", "storage", "business"} <= set(config.swarms)
    for swarm in config.swarms.values():
        caps = [c for p in swarm.pools.values() for c in p.agent.capability_names]
        assert 3 <= len(swarm.pools) <= 5
        assert len(caps) == len(set(caps)), f"{swarm.name} repeats a capability"


def test_names_come_from_mapping_keys():
    config = load_config(minimal())
    assert config.swarms["s"].name == "s"
    assert config.swarms["s"].pools["p"].name == "p"
    assert config.swarms["s"].capabilities == ["text.stats"]


def test_max_below_min_names_the_field_and_both_values():
    data = minimal()
    data["swarms"]["s"]["pools"]["p"].update(min_agents=3, max_agents=2)
    problems, message = problems_of(data)
    assert "swarms.s.pools.p" in problems
    assert "max_agents (2) must be >= min_agents (3)" in message


def test_unknown_field_is_rejected_with_its_path():
    problems, _ = problems_of(minimal(queen={"max_queue": 5}))
    assert "swarms.s.queen.max_queue" in problems


def test_agent_class_that_does_not_import_is_reported():
    data = minimal()
    data["swarms"]["s"]["pools"]["p"]["agent"]["class"] = "no_such_module:Agent"
    problems, message = problems_of(data)
    assert "swarms.s.pools.p.agent" in problems
    assert "cannot import module 'no_such_module'" in message


def test_agent_class_must_subclass_agent():
    data = minimal()
    data["swarms"]["s"]["pools"]["p"]["agent"]["class"] = "collections:OrderedDict"
    _, message = problems_of(data)
    assert "not a subclass of actors.Agent" in message


def test_fractional_gpus_above_one_are_rejected():
    with pytest.raises(ValueError, match=r"whole number, got 1\.5"):
        ResourcesConfig(num_gpus=1.5)
    assert ResourcesConfig(num_gpus=0.5).ray_options() == {"num_gpus": 0.5}


def test_accelerator_type_needs_a_gpu():
    with pytest.raises(ValueError, match="needs num_gpus > 0"):
        ResourcesConfig(accelerator_type="A100")


def test_resources_map_to_ray_actor_options():
    opts = ResourcesConfig(
        num_cpus=2, num_gpus=1, accelerator_type="L4", memory_mb=512, custom={"edge": 1}
    ).ray_options()
    assert opts == {
        "num_cpus": 2,
        "num_gpus": 1,
        "accelerator_type": "L4",
        "memory": 512 * 2**20,
        "resources": {"edge": 1},
    }


def test_bad_capability_name_is_rejected():
    data = minimal()
    data["swarms"]["s"]["pools"]["p"]["agent"]["capabilities"] = ["Not A Name"]
    problems, _ = problems_of(data)
    assert any(path.startswith("swarms.s.pools.p.agent.capabilities.0") for path in problems)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"(?s)nope\.yaml.*cannot read file"):
        load_config(tmp_path / "nope.yaml")


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("swarms: [unclosed\n")
    with pytest.raises(ConfigError, match=r"(?s)bad\.yaml.*not valid YAML") as info:
        load_config(path)
    # The line and column point into the file, not into "<unicode string>".
    assert "<unicode string>" not in str(info.value) and f'in "{path}", line 2' in str(info.value)


def test_namespace_override_from_environment(monkeypatch):
    monkeypatch.setenv("SWARMRAY_NAMESPACE", "staging")
    assert load_config(minimal()).namespace == "staging"


def test_swarm_up_with_invalid_config_fails_before_ray_starts(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(
        "swarms:\n  s:\n    pools:\n      p:\n        agent: {class: 'actors:TextStatsAgent'}\n"
        "        min_agents: 4\n        max_agents: 1\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "cluster", "up", "--config", str(path), "--address", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    # The address points nowhere: reaching it would have failed differently.
    assert "broken.yaml: invalid configuration" in proc.stderr
    assert "swarms.s.pools.p: max_agents (1) must be >= min_agents (4)" in proc.stderr


def test_journals_nested_in_one_another_are_refused(tmp_path):
    # Each journal lives at <uri>/<namespace>/<owner>; purging a's would delete b's.
    data = {"namespace": "ns", "swarms": {"a": minimal()["swarms"]["s"], "b": minimal()["swarms"]["s"]}}
    data["swarms"]["a"]["journal"] = {"uri": str(tmp_path)}
    data["swarms"]["b"] = {**data["swarms"]["b"], "journal": {"uri": str(tmp_path / "ns" / "a")}}
    problems, message = problems_of(data)
    assert "swarms.b.journal.uri" in problems
    assert f"{tmp_path / 'ns' / 'a' / 'ns' / 'b'} is inside swarm a's journal" in message


def test_swarms_may_share_a_journal_uri(tmp_path):
    data = {"swarms": {"a": minimal()["swarms"]["s"], "b": minimal()["swarms"]["s"]}}
    for swarm in data["swarms"].values():
        swarm["journal"] = {"uri": "s3://bucket/prefix"}
    config = load_config(data)
    assert config.swarms["a"].journal.uri == config.swarms["b"].journal.uri == "s3://bucket/prefix"


def test_heartbeats_slower_than_the_registry_s_staleness_are_refused():
    problems, message = problems_of({**minimal(health={"period_s": 10}), "registry": {"stale_after_s": 10}})
    assert "swarms.s.health.period_s" in problems
    assert "period_s (10.0) must be below registry.stale_after_s (10.0)" in message


def test_a_ping_timeout_that_outlasts_the_staleness_window_is_refused():
    problems, message = problems_of(minimal(health={"period_s": 4, "ping_timeout_s": 8}))
    assert "swarms.s.health.ping_timeout_s" in problems
    assert "period_s + ping_timeout_s (4.0 + 8.0 s) must be below registry.stale_after_s (10.0)" in message


def test_snapshots_more_often_than_sweeps_are_refused():
    problems, message = problems_of(minimal(memory={"sweep_period_s": 60, "snapshot_period_s": 30}))
    assert "swarms.s.memory" in problems
    assert "snapshot_period_s (30.0) must be at least sweep_period_s (60.0)" in message


def test_params_that_do_not_fit_the_agent_constructor_are_refused_at_load():
    data = minimal()
    data["swarms"]["s"]["pools"]["p"]["agent"] = {"class": "actors:KeywordsAgent", "params": {"top": 3}}
    problems, message = problems_of(data)
    assert "swarms.s.pools.p.agent" in problems
    assert "params do not fit actors:KeywordsAgent(top_n: int = 5): unexpected keyword 'top'" in message
    data["swarms"]["s"]["pools"]["p"]["agent"]["params"] = {"top_n": 3}
    assert load_config(data).swarms["s"].pools["p"].agent.params == {"top_n": 3}


def test_auth_is_on_by_default_and_off_only_on_loopback():
    import yaml
    from pydantic import ValidationError

    from serve import AIServiceConfig, FactsServiceConfig
    from tests.readme import blocks

    assert AIServiceConfig().auth.enabled and FactsServiceConfig().auth.enabled
    snippet = yaml.safe_load(blocks("Security", "yaml")[0])  # the README's way to turn it off
    assert not AIServiceConfig(**snippet["ai"]).auth.enabled  # on 127.0.0.1, the default host
    with pytest.raises(ValidationError, match="allowed only while Serve listens on loopback"):
        FactsServiceConfig(host="0.0.0.0", **snippet["ai"])


def test_a_provider_key_missing_from_the_environment_is_found_before_anything_starts():
    from cluster._private.config import unset_secrets

    data = {
        "swarms": minimal()["swarms"],
        "ai": {
            "providers": {
                "vendor": {
                    "base_url": "https://api.example.com/v1",
                    "model": "m",
                    "api_key_env": "VENDOR_KEY",
                }
            }
        },
    }
    config = load_config(data)
    assert unset_secrets(config, {}) == [("ai.providers.vendor.api_key_env", "$VENDOR_KEY is not set here")]
    assert unset_secrets(config, {"VENDOR_KEY": "k"}) == []


def test_the_facts_ingress_takes_the_requests_its_config_sizes_it_for():
    """Serve's default of 5 ongoing requests let five slow reads hold up every namespace."""
    from serve import FactsServiceConfig
    from serve._private.service import build_facts_app

    config = FactsServiceConfig(
        ingress_max_ongoing_requests=64, namespaces={"default": {"extractor": "none"}}, path="/tmp/unused"
    )
    ingress = build_facts_app(config, "system")._bound_deployment
    assert ingress.max_ongoing_requests == 64
    assert FactsServiceConfig().ingress_max_ongoing_requests > 5


def test_capability_annotations_take_the_mcp_names_and_refuse_an_unknown_hint():
    caps = [{"name": "text.stats", "annotations": {"readOnlyHint": True, "title": "Stats"}}]
    config = load_config(
        minimal(pools={"p": {"agent": {"class": "actors:TextStatsAgent", "capabilities": caps}}})
    )
    (cap,) = config.swarms["s"].pools["p"].agent.capabilities
    assert cap.annotations.hints() == {"title": "Stats", "readOnlyHint": True}  # unset hints left out
    bad = [{"name": "text.stats", "annotations": {"readOnlyHnt": True}}]
    problems, _ = problems_of(
        minimal(pools={"p": {"agent": {"class": "actors:TextStatsAgent", "capabilities": bad}}})
    )
    assert any("readOnlyHnt" in path for path in problems), problems


def test_the_local_config_annotates_read_only_capabilities():
    config = load_config(ROOT / "configs" / "local.yaml")
    caps = {c.name: c for s in config.swarms.values() for p in s.pools.values() for c in p.agent.capabilities}
    assert caps["text.keywords"].annotations.hints()["readOnlyHint"] is True
    assert caps["text.readability"].annotations.hints() == {"readOnlyHint": True, "openWorldHint": False}


def test_an_agent_class_declaring_an_unknown_hint_is_refused_at_load_naming_it():
    # Found late, when `catalog()` builds the tool list, it would break `swarm capabilities`
    # and the /mcp tool list of the whole system; at load it is one config error.
    problems, message = problems_of(
        minimal(pools={"p": {"agent": {"class": "tests.agents:MisannotatedAgent"}}})
    )
    assert "swarms.s.pools.p.agent" in problems, problems
    assert "readOnlyHnt" in message and "misannotated.run" in message


def test_the_facts_shards_run_in_the_ingress_only_while_it_is_one_replica():
    """`colocate` (None: colocated at one ingress replica): a namespace has one writer, so
    shards inside several ingress replicas would be several writers of one store."""
    from pydantic import ValidationError

    from serve import FactsServiceConfig
    from serve._private.service import build_facts_app

    def built(**fields):
        config = FactsServiceConfig(
            namespaces={"a": {"extractor": "none", "num_cpus": 0.5}, "b": {"extractor": "none"}},
            path="/tmp/unused",
            control_resources={"control": 0.001},
            **fields,
        )
        return build_facts_app(config, "system")._bound_deployment

    colocated = built()
    assert colocated.num_replicas == 1 and colocated.ray_actor_options == {
        "num_cpus": 0.5,
        "resources": {"control": 0.001},  # where the shards' data is
    }
    assert set(colocated.init_args[3]) == {"a", "b"} and colocated.init_args[1] == {}
    apart = built(ingress_replicas=2)
    assert set(apart.init_args[1]) == {"a", "b"} and len(apart.init_args) == 3
    assert set(built(colocate=False).init_args[1]) == {"a", "b"}
    with pytest.raises(ValidationError, match="ingress_replicas 1"):
        FactsServiceConfig(colocate=True, ingress_replicas=2)
