"""configs/serve.yaml and the application builders it names, checked without Ray: the file is
a valid Serve config, its args fit the builders' models the way Serve checks them, and it runs
the same services configs/local.yaml describes."""

import inspect

import pytest
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from cluster import load_config
from models._private.core.config import import_object
from serve import AIAppArgs, FactsAppArgs, ai_app, facts_app
from tests.conftest import ROOT

SERVE_YAML = ROOT / "configs" / "serve.yaml"


def _apps() -> dict:
    return {a["name"]: a for a in yaml.safe_load(SERVE_YAML.read_text())["applications"]}


def test_the_file_is_a_valid_serve_deploy_config():
    schema = ServeDeploySchema.model_validate(yaml.safe_load(SERVE_YAML.read_text()))
    assert [a.name for a in schema.applications] == ["swarmray-ai", "swarmray-facts"]
    assert [a.route_prefix for a in schema.applications] == ["/", "/facts"]


def test_serve_finds_each_builder_and_validates_its_args_with_the_builders_model():
    # Serve validates args only when the builder's one parameter is annotated with a pydantic
    # class (ray/serve/_private/api.py, call_user_app_builder_with_args_if_necessary); a string
    # annotation (from `from __future__ import annotations`) would pass raw dicts through.
    for app, model in (("swarmray-ai", AIAppArgs), ("swarmray-facts", FactsAppArgs)):
        builder = import_object(_apps()[app]["import_path"])
        (param,) = inspect.signature(builder).parameters.values()
        assert param.annotation is model
        assert model.model_validate(_apps()[app]["args"]).system == "swarmray"
    assert (import_object("serve:ai_app"), import_object("serve:facts_app")) == (ai_app, facts_app)


def test_the_file_runs_the_services_of_the_local_system_config():
    local = load_config(ROOT / "configs" / "local.yaml")
    ai, facts = (
        AIAppArgs.model_validate(_apps()["swarmray-ai"]["args"]),
        FactsAppArgs.model_validate(_apps()["swarmray-facts"]["args"]),
    )
    assert ai.system == facts.system == local.namespace
    assert ai.service() == local.ai
    assert facts.service() == local.facts
    http = yaml.safe_load(SERVE_YAML.read_text())["http_options"]
    assert (http["host"], http["port"]) == (local.ai.host, local.ai.port)


@pytest.mark.parametrize(
    ("args", "field", "reason"),
    [
        ({"port": 9000}, "", "port: set by the Serve config file"),
        ({"route_prefix": "/x", "host": "0.0.0.0"}, "", "host, route_prefix: set by the Serve config file"),
        ({"auth": {"enabled": False}}, "", "auth.enabled false is refused in a Serve config file"),
        ({"system": "Bad Name"}, "system", "String should match pattern"),
        ({"modles": {}}, "modles", "Extra inputs are not permitted"),
    ],
)
def test_bad_args_name_the_field_and_the_reason(args, field, reason):
    with pytest.raises(ValidationError) as e:
        AIAppArgs.model_validate(args)
    (error,) = e.value.errors()
    assert ".".join(map(str, error["loc"])) == field
    assert reason in error["msg"]


def test_llm_extraction_in_a_file_needs_the_ai_url():
    args = {"namespaces": {"n": {"extractor": "llm", "llm_model": "m"}}}
    with pytest.raises(ValidationError, match="needs ai_url"):
        FactsAppArgs.model_validate(args)
    assert FactsAppArgs.model_validate({**args, "ai_url": "http://127.0.0.1:8000/v1"}).needs_ai()
