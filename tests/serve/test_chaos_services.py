"""The services' chaos run, short: both services with auth on under load (documents posted,
deleted and posted again, facts posted and deleted, searches, chat completions with an admin
key, a key at its rpm and a key at its token budget) while a facts shard, the facts ingress, the
AI gateway, the key authority and the extractor are killed in turn; then every acknowledged
write is read back. `python -m benchmarks.chaos --scenario services` runs it longer, with a
baseline; benchmarks/_chaos_services.py has the rules. Select it with `-m chaos`."""

import pytest

from benchmarks._chaos_services import PARTS, deploy_services, remove_services, run_services_chaos

SYSTEM = "chaos-test"
LOAD_S = 75.0  # longer when a part is slow to come back: the last one killed must answer again


@pytest.fixture(scope="module")
def services(serve_port, tmp_path_factory):
    made = deploy_services(SYSTEM, serve_port, str(tmp_path_factory.mktemp("chaos")))
    yield made
    remove_services(made)


@pytest.mark.slow
@pytest.mark.chaos
def test_parts_killed_in_turn_lose_no_write_admit_nothing_past_a_limit_and_audit_every_write(services):
    report = run_services_chaos(services, LOAD_S)
    detail = "\n".join(report.examples)
    assert report.kills == len(PARTS) and sorted(report.recover_s) == sorted(PARTS)
    assert report.documents_acknowledged and report.deletes_acknowledged, detail  # the load ran
    assert report.facts_acknowledged and report.fact_deletes_acknowledged, detail
    assert report.rpm_refused and report.budget_refused, detail  # both keys were held at their limits
    assert report.zeros() == dict.fromkeys(report.zeros(), 0), detail
