"""bench/records/recorder.py's W&B side: samples as a wandb.Table, record files as an artifact, in
a real offline W&B run whose directory must hold them."""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

from bench.records.recorder import RunRecorder, write_json_atomic
from analysis_records import samples


def test_samples_table_and_artifact_land_in_the_offline_run(tmp_path):
    recorder = RunRecorder(tmp_path, {"seed": 0}, SimpleNamespace(mode="offline", project="slmbench-test", entity=None,
                                                                  group=None),
                           {"method": "full", "model": "tiny-llama", "task": "arithmetic"})
    lines = samples("arithmetic", [True, False, True])
    recorder.write_samples(lines, primary_metric="exact_match")
    write_json_atomic(tmp_path / "result.json", {"status": "ok"})
    recorder.log_artifact("record-full-tiny-llama-s0", "run-record", [tmp_path / "result.json", tmp_path / "samples.jsonl"])
    recorder.close()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    (table_file,) = (run_dir / "files" / "media" / "table" / "eval").glob("samples_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"][:7] == ["eval_set", "id", "prompt", "generation", "extracted", "gold", "verdict"]
    assert [row[6] for row in table["data"]] == [True, False, True]
    assert table["data"][1][:6] == ["arithmetic", "q1", "question 1", "7", "7", "8"]
    copied = run_dir / "files" / "artifacts" / "record-full-tiny-llama-s0"
    assert json.loads((copied / "result.json").read_text()) == {"status": "ok"}
    assert (copied / "samples.jsonl").read_text() == (tmp_path / "samples.jsonl").read_text()
    # The artifact itself is in the run's log, ready for `wandb sync`.
    (log,) = run_dir.glob("run-*.wandb")
    assert wait_for(lambda: b"record-full-tiny-llama-s0" in log.read_bytes() and b"run-record" in log.read_bytes())


def wait_for(condition, seconds: float = 60.0) -> bool:
    """W&B's writer process may still be flushing the run's log when `finish` returns on a busy
    machine (seen in CI): wait for the content, never for a fixed time."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_without_wandb_nothing_is_logged(tmp_path):
    recorder = RunRecorder(tmp_path, {}, SimpleNamespace(mode="disabled", project="p", entity=None, group=None),
                           {"method": "full", "model": "m", "task": "t"})
    recorder.write_samples(samples("s", [True]))
    recorder.log_artifact("x", "run-record", [tmp_path / "samples.jsonl"])
    recorder.close()
    assert not (tmp_path / "wandb").exists() and (tmp_path / "samples.jsonl").exists()
