"""Property-based fuzzing of both services' OpenAPI schemas (schemathesis) over real HTTP, with
auth on: every operation, positive and negative cases, each sent with an admin key, with no or
an unknown key, and with a key out of scope (benchmarks/_fuzz.py has the rules). A bounded run;
`python -m benchmarks.fuzz` runs longer. Real services: a tiny random-weight model, the embedder,
the facts shards."""

import httpx
import pytest

from benchmarks._fuzz import deploy_targets, fuzz, remove_targets
from models._private.core.names import bearer

SYSTEM = "fuzz-test"
EXAMPLES = 12  # positive cases per operation, and 6 negative ones


@pytest.fixture(scope="module")
def targets(serve_port, tmp_path_factory):
    made = deploy_targets(SYSTEM, serve_port, str(tmp_path_factory.mktemp("fuzz")))
    yield made
    remove_targets(SYSTEM)


@pytest.mark.parametrize("service", ["ai", "facts"])
def test_no_5xx_no_hang_every_answer_in_the_schema_and_auth_never_ignored(targets, service):
    tally = fuzz(targets[service], EXAMPLES)
    assert tally.problems == 0, "\n".join(tally.examples)
    assert tally.operations == {"ai": 7, "facts": 20}[service]  # every route was reached
    assert tally.accepted > tally.operations  # past validation, not only 4xx
    assert tally.requests >= 3 * tally.operations * EXAMPLES


def test_the_schemas_state_the_key_and_the_errors(targets):
    for target in targets.values():
        schema = httpx.get(target.root + "/openapi.json", headers=bearer(target.admin_key)).json()
        assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
        for operations in schema["paths"].values():
            for operation in operations.values():
                assert {"400", "401", "403", "429"} <= set(operation["responses"]) and "422" not in operation[
                    "responses"
                ]


def test_the_chat_schema_fuzzed_carries_tools_formats_and_tool_turns(targets):
    ai = targets["ai"]
    schemas = httpx.get(ai.root + "/openapi.json", headers=bearer(ai.admin_key)).json()["components"][
        "schemas"
    ]
    assert {"tools", "tool_choice", "parallel_tool_calls", "response_format"} <= set(
        schemas["ChatBody"]["properties"]
    )
    assert {"tool_calls", "tool_call_id"} <= set(schemas["Message"]["properties"])
    assert schemas["FunctionDefinition"]["properties"]["name"]["pattern"] == "^[a-zA-Z0-9_-]{1,64}$"
