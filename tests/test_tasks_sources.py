"""bench/tasks/sources.py: local jsonl rows with their origin, data errors that name file and line,
and no hub access when a local path is given."""
from __future__ import annotations

import json

import pytest

from bench.errors import DataError
from bench.tasks.sources import Row, field, load_rows, read_jsonl
from tests.conftest import FIXTURES


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Any attempt to reach the hub fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    def no_hub(*args, **kwargs):
        raise AssertionError(f"hub access attempted: load_dataset{args}")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)


def test_local_path_rows_and_origin():
    rows = load_rows({"path": str(FIXTURES / "gsm8k" / "test.jsonl"), "hub": "openai/gsm8k",
                      "config": "main", "split": "test"}, "task.eval.gsm8k_test")
    assert len(rows) == 40  # tests/fixtures/README.md
    assert rows[0].origin.endswith("gsm8k/test.jsonl:1") and set(rows[0].data) == {"question", "answer"}


def test_relative_paths_resolve_against_the_directory_started_from(tmp_path, monkeypatch):
    monkeypatch.chdir(FIXTURES)  # as the user's shell would read the path
    rows = load_rows({"path": "gsm8k/test.jsonl", "limit": 5}, "task.train")
    assert len(rows) == 5 and rows[0].origin.startswith(str(FIXTURES / "gsm8k" / "test.jsonl"))
    monkeypatch.chdir(tmp_path)  # the same relative path elsewhere is another file: refused, naming where it looked
    with pytest.raises(FileNotFoundError, match=f"task.train.path='gsm8k/test.jsonl': {tmp_path}/gsm8k/test.jsonl "
                                                f"does not exist .*started in, {tmp_path}"):
        load_rows({"path": "gsm8k/test.jsonl", "limit": 5}, "task.train")


def test_limit_takes_the_first_rows():
    path = FIXTURES / "math" / "math500_test.jsonl"
    rows = load_rows({"path": str(path), "limit": 3}, "task.eval.x")
    first_three = [json.loads(line)["unique_id"] for line in path.read_text().splitlines()[:3]]
    assert [r.data["unique_id"] for r in rows] == first_three
    assert [r.origin.rsplit(":", 1)[1] for r in rows] == ["1", "2", "3"]
    with pytest.raises(ValueError, match="task.eval.x.limit must be positive"):
        load_rows({"path": str(FIXTURES / "math" / "math500_test.jsonl"), "limit": 0}, "task.eval.x")


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q1", "answer": "#### 1"}\n\n{"question": "q2", "answer": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: not valid JSON"):
        read_jsonl(path)


def test_non_object_line_is_an_error(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('["q", "a"]\n')
    with pytest.raises(DataError, match=r"list\.jsonl:1: expected a JSON object, got list"):
        read_jsonl(path)


def test_missing_field_names_the_field_and_the_existing_ones():
    row = Row("data.jsonl:7", {"problem": "p", "solution": "s"})
    with pytest.raises(DataError, match=r"data\.jsonl:7: missing field 'question' \(fields\.question\); "
                                        r"the row has fields \['problem', 'solution'\]"):
        field(row, {"question": "question"}, "question")
    assert field(row, {"answer": None}, "answer", required=False) is None


def test_missing_file_names_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"task\.train\.path='nope\.jsonl'"):
        load_rows({"path": "nope.jsonl", "hub": "openai/gsm8k"}, "task.train")


def test_no_source_is_an_error():
    with pytest.raises(ValueError, match="task.train: set `path`"):
        load_rows({"path": None, "hub": None}, "task.train")


def test_hub_source_concatenates_configs(monkeypatch):
    """The hub branch (datasets.load_dataset replaced: tests never reach the hub)."""
    import datasets

    calls = []

    def fake_load(path, name=None, split=None):
        calls.append((path, name, split))
        return [{"problem": f"{name}-{i}"} for i in range(2)]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    rows = load_rows({"hub": "EleutherAI/hendrycks_math", "config": ["algebra", "geometry"], "split": "train",
                      "path": None, "limit": 3}, "task.train")
    assert [r.data["problem"] for r in rows] == ["algebra-0", "algebra-1", "geometry-0"]
    assert rows[2].origin == "EleutherAI/hendrycks_math[geometry]:train#0"
    assert calls == [("EleutherAI/hendrycks_math", "algebra", "train"), ("EleutherAI/hendrycks_math", "geometry", "train")]
