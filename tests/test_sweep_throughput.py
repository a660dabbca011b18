"""lab/sweep_throughput.py (`python -m lab sweep_throughput`) end to end on the CPU (--quick): three real sweeps through the
parallel launcher, the JSON's keys and checks, and its markdown section."""
from __future__ import annotations

import json

from lab import cli, sweep_throughput


def test_quick_sweep_throughput_writes_the_report(tmp_path, cache_dir):
    out = tmp_path / "sweep_throughput.json"
    cli.main(["sweep_throughput", "--quick", "--jobs-per-gpu", "2", "--work-dir", str(tmp_path / "work"),
                           "--cache-dir", str(cache_dir), "--out", str(out)])
    report = json.loads(out.read_text())
    for key in ("device", "commit", "serial_wall_s", "packed_wall_s", "jobs_per_gpu", "cold_epoch_s", "warm_epoch_s",
                "accuracy_packed", "accuracy_serial", "final_train_loss_serial", "final_train_loss_packed",
                "eval_wall_clock_s_serial", "eval_wall_clock_s_packed", "checks"):
        assert key in report, key
    assert report["device"] == "cpu" and report["jobs_per_gpu"] == 2
    assert set(report["accuracy_serial"]) == set(report["accuracy_packed"]) == {"none", "lora"}
    assert report["cold_method"] == "lora" and report["warm_method"] == "lora"
    assert [r["device_share"]["jobs_on_device_max"] for r in report["serial"]["runs"]] == [1, 1]
    assert report["serial"]["runs"][0]["device_share"]["launcher_jobs_per_gpu"] is None  # CPU
    # the same config, on the CPU: packing changes no loss
    assert report["checks"]["packing_changes_no_result"]["per_method"]["lora"]["loss_rel_diff"] < 1e-6
    section = sweep_throughput.markdown(report)
    assert section.startswith("## Sweep throughput: 2 runs, serial vs 2 jobs per GPU")
    assert "| lora |" in section and "| none |" in section
