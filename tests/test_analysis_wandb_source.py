"""analysis/wandb_source.py: a W&B run as RunRecorder writes it becomes the same record.
(The live API is not reachable in tests; the conversion is what is tested.)"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from analysis.collect import RecordError, frame_from_records
from analysis.wandb_source import records_from_wandb, run_to_record


def fake_run(run_id="abc", status="ok", tags=("lora", "m1", "metamathqa"), state="finished", seed=1):
    summary = {"status": status, "_step": 10, "_wandb": {"runtime": 3}}
    if status == "ok":
        summary.update({"accuracy": 0.45, "primary_metric": "exact_match", "peak_gpu_memory_gib": 6.0,
                        "accuracy/gsm8k/exact_match": 0.5, "accuracy/gsm8k/n": 100,
                        "accuracy/math500/exact_match": 0.4})
    config = {"seed": seed, "model": {"name": "m1"}, "task": {"name": "metamathqa"}, "train": {"lr": 2e-4}}
    return SimpleNamespace(id=run_id, summary=summary, config=config, tags=list(tags), state=state)


class FakeApi:
    def __init__(self, runs):
        self._runs = runs

    def runs(self, path):
        assert path == "me/slmbench"
        return self._runs


def test_a_wandb_run_gives_the_same_columns_as_a_result_json():
    records = list(records_from_wandb("me/slmbench", FakeApi([fake_run(), fake_run("def", status="oom", seed=2),
                                                              fake_run("ghi", state="running")])))
    df = frame_from_records(records)
    assert df["run_dir"].tolist() == ["wandb:me/slmbench/abc", "wandb:me/slmbench/def"]  # running: skipped
    first = df.iloc[0]
    assert (first["method"], first["model"], first["task"], first["seed"]) == ("lora", "m1", "metamathqa", 1)
    assert first["acc/gsm8k"] == 0.5 and first["acc/math500"] == 0.4 and first["peak_gpu_memory_gib"] == 6.0
    assert first["cfg/train.lr"] == 2e-4
    assert df.iloc[1]["status"] == "oom"


def test_a_run_without_tags_is_named():
    with pytest.raises(RecordError, match="wandb:me/slmbench/abc: W&B run has no tags"):
        run_to_record(fake_run(tags=()), "wandb:me/slmbench/abc")


def test_bad_path():
    with pytest.raises(ValueError, match="ENTITY/PROJECT"):
        list(records_from_wandb("slmbench", FakeApi([])))
