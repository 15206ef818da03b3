"""`swarm memory load`'s reading of a JSONL file: every line checked before anything is written."""

import json

import pytest

from cluster._private.memory_load import records_of_file
from models._private.core.errors import MemoryInputError


def write(tmp_path, lines):
    path = tmp_path / "notes.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_records_get_the_default_namespace_and_an_id_stable_across_loads(tmp_path):
    path = write(
        tmp_path, [json.dumps({"text": "a"}), "", json.dumps({"text": "b", "id": "x", "namespace": "n"})]
    )
    assert records_of_file(path, "work") == [
        {"id": "notes:1", "namespace": "work", "text": "a"},
        {"id": "x", "namespace": "n", "text": "b"},
    ]


@pytest.mark.parametrize(
    ("line", "where", "reason"),
    [
        ("{not json", "notes.jsonl:2", "not JSON"),
        ("[1, 2]", "notes.jsonl:2", "not a JSON object"),
        ('{"text": "x", "colour": "red"}', "notes.jsonl:2", "unknown field(s) ['colour']"),
        ('{"text": "x", "importance": 3}', "notes.jsonl:2: importance", "less than or equal to 1"),
        ('{"id": "x"}', "notes.jsonl:2: text", "Field required"),
    ],
)
def test_a_bad_line_is_named_with_its_reason(tmp_path, line, where, reason):
    path = write(tmp_path, [json.dumps({"text": "fine"}), line])
    with pytest.raises(MemoryInputError) as e:
        records_of_file(path, "work")
    assert e.value.field.endswith(where) and reason in e.value.reason
