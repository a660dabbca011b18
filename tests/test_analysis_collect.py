"""analysis/collect.py: every result.json becomes one row; bad records name their file."""
from __future__ import annotations

import math

import pytest

from analysis.collect import RecordError, collect
from analysis_records import paper_runs, record, smoke_record, write
from bench.records.stats import wilson_interval


def test_one_row_per_run_in_sweep_order_with_failed_runs_kept(tmp_path):
    df = collect([paper_runs(tmp_path)])
    assert len(df) == 10
    # Job 10 of a sweep would sort after 9, not after 1: digit runs compare as numbers.
    assert [p.rsplit("/", 1)[1] for p in df["run_dir"]][:3] == ["0-full-m1-s0", "1-full-m1-s1", "2-full-m1-s2"]
    failed = df[df["run_dir"].str.endswith("6-lora-m1-s3")].iloc[0]
    assert failed["status"] == "failed" and failed["error"] == "failed at step 7" and failed["error_step"] == 7
    assert math.isnan(failed["acc/gsm8k_test"])
    assert (df["status"] == "oom").sum() == 2


def test_eval_sets_config_and_missing_metrics(tmp_path):
    df = collect([paper_runs(tmp_path)]).set_index("run_dir")
    row = df.loc[str(tmp_path / "1-full-m1-s1")]
    assert row["acc/gsm8k_test"] == 0.6 and row["acc/gsm8k_test/accuracy"] == 0.6 and row["acc/math500"] == 0.3
    assert row["accuracy"] == pytest.approx(0.45)
    assert row["cfg/train.lr"] == 1e-4 and row["cfg/train.betas"] == "[0.9, 0.999]" and row["cfg/method.r"] == 256
    # The lora run on m2 recorded no peak memory: an empty cell, not a crash.
    assert math.isnan(df.loc[str(tmp_path / "9-lora-m2-s0")]["peak_gpu_memory_gib"])


def test_more_jobs_than_nine_keep_their_order(tmp_path):
    for job in (10, 2, 1):
        write(tmp_path, f"{job}-full-m1-s{job}", record("full", "m1", job, gsm8k=0.1))
    assert [p.rsplit("/", 1)[1] for p in collect([tmp_path])["run_dir"]] == ["1-full-m1-s1", "2-full-m1-s2", "10-full-m1-s10"]


@pytest.mark.parametrize("payload, message", [
    ('{"status": "ok",\n "method": }', r"result.json:2: not valid JSON"),
    ({"status": "ok", "model": "m", "task": "t", "metrics": {}}, "no 'method' key"),
    ({**record("full", "m", 0, gsm8k=0.5), "status": "done"}, "status='done'; allowed: ok, failed, oom"),
    ({**record("full", "m", 0), "metrics": {"accuracy": "high"}}, "metrics.accuracy='high' is not a number"),
    ({**record("full", "m", 0), "metrics": {"accuracy_by_task": {"gsm8k": 0.5}}}, "accuracy_by_task must map"),
    ({k: v for k, v in record("full", "m", 0, status="failed").items() if k != "error"}, "needs error"),
])
def test_a_schema_error_names_its_file(tmp_path, payload, message):
    write(tmp_path, "0-good", record("full", "m", 0, gsm8k=0.5))
    bad = write(tmp_path, "1-bad", payload)
    with pytest.raises(RecordError, match=message) as err:
        collect([tmp_path])
    assert str(bad) in str(err.value)


def test_a_missing_directory_is_an_error_not_an_empty_table(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        collect([tmp_path / "nowhere"])


def test_intervals_are_read_from_the_record(tmp_path):
    body = record("full", "m", 0, gsm8k=0.5)
    body["metrics"]["accuracy_ci95"] = [0.4, 0.6]
    body["metrics"]["accuracy_by_task"]["gsm8k_test"]["accuracy_ci95"] = [0.41, 0.59]
    write(tmp_path, "0-full", body)
    row = collect([tmp_path]).iloc[0]
    assert (row["accuracy_ci95_lo"], row["accuracy_ci95_hi"]) == (0.4, 0.6)
    assert (row["acc/gsm8k_test/ci95_lo"], row["acc/gsm8k_test/ci95_hi"]) == (0.41, 0.59)
    assert row["acc/gsm8k_test/accuracy_ci95_lo"] == 0.41


def test_a_record_without_intervals_gets_them_from_its_samples(tmp_path):
    name, body, lines = smoke_record("full", "tiny-llama", 0, [True] * 7 + [False] * 3)
    write(tmp_path, f"0-{name}", body, lines)
    row = collect([tmp_path]).iloc[0]
    assert [row["accuracy_ci95_lo"], row["accuracy_ci95_hi"]] == pytest.approx(wilson_interval(7, 10), abs=1e-12)
    assert [row["acc/arithmetic/ci95_lo"], row["acc/arithmetic/ci95_hi"]] == pytest.approx(wilson_interval(7, 10), abs=1e-12)


def test_a_malformed_interval_names_the_key(tmp_path):
    body = record("full", "m", 0, gsm8k=0.5)
    body["metrics"]["accuracy_ci95"] = 0.1
    path = write(tmp_path, "0-full", body)
    with pytest.raises(RecordError, match=rf"{path}: metrics.accuracy_ci95=0.1 is not an interval \[lo, hi\]"):
        collect([tmp_path])
