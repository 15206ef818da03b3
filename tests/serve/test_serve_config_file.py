"""configs/serve.yaml deployed for real with `serve deploy` to the session's Ray head, then used
over HTTP with a key: the same builders a KubeRay RayService runs."""

import os
import shutil
import subprocess

import httpx
import openai
import pytest
import ray
import yaml
from ray import serve

from models._private.core.journal import journal_location
from serve._private.auth.authority import get_authority
from serve._private.auth.config import AuthConfig
from tests.conftest import RAY, ROOT, user_env
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def deployed(ray_head, serve_port, tmp_path_factory):
    """The checked-in file with its applications renamed and moved under a prefix of their own
    (beside the suite's other applications) and Serve's running port: nothing else changed."""
    namespace = f"file{os.getpid()}"
    config = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": serve_port}
    for app in config["applications"]:
        app["name"] = app["name"].replace("swarmray", namespace)
        app["route_prefix"] = f"/{namespace}{app['route_prefix']}".rstrip("/")
        app["args"]["system"] = namespace
    path = tmp_path_factory.mktemp("serve") / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    serve_cli = os.path.join(os.path.dirname(RAY), "serve")
    # Ray's own CLI sends the cluster's token only when told to, as the README says.
    deploy = [serve_cli, "deploy", str(path), "--address", ray_head["dashboard"]]
    subprocess.run(deploy, check=True, env=user_env(RAY_AUTH_MODE="token"))
    apps = [a["name"] for a in config["applications"]]

    def running():
        states = {a: serve.status().applications.get(a) for a in apps}
        failed = [s.message for s in states.values() if s is not None and s.status == "DEPLOY_FAILED"]
        assert not failed, failed
        return all(s is not None and s.status == "RUNNING" for s in states.values())

    wait_until(running, timeout_s=300, what=f"{apps} running")
    authority = get_authority(namespace, AuthConfig())
    key = ray.get(
        authority.create.remote({"name": "file", "scopes": ["ai:invoke", "facts:read", "facts:write"]})
    )
    yield {"base": f"http://127.0.0.1:{serve_port}/{namespace}", "key": key["key"]}
    for app in apps:
        serve.delete(app)
    ray.kill(authority, no_restart=True)
    shutil.rmtree(os.path.dirname(journal_location(None, namespace, "_auth")), ignore_errors=True)


@pytest.mark.slow
def test_the_deployed_file_answers_a_chat_and_a_facts_search_with_a_key(deployed):
    client = openai.OpenAI(base_url=f"{deployed['base']}/v1", api_key=deployed["key"])
    chat = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4
    )
    assert chat.choices[0].message.content and chat.usage.completion_tokens > 0

    headers = {"Authorization": f"Bearer {deployed['key']}"}
    with httpx.Client(base_url=f"{deployed['base']}/facts/v1", headers=headers, timeout=60) as http:
        doc = {"id": "curie", "title": "Marie Curie", "text": "Marie Curie was born in Warsaw."}
        assert http.post("/namespaces/demo/documents", json=doc).status_code == 201
        hits = http.post("/search", json={"query": "Where was Marie Curie born?", "k": 1, "mode": "passages"})
        assert hits.status_code == 200, hits.text
        assert [p["document_id"] for p in hits.json()["passages"]] == ["curie"]
        # The file's other namespace is there too, and a call without the key is refused.
        assert sorted(n["namespace"] for n in http.get("/namespaces").json()["data"]) == ["default", "demo"]
        assert httpx.get(f"{deployed['base']}/facts/v1/namespaces").status_code == 401
