"""lab/sweep_throughput.py (`python -m lab sweep_throughput`) end to end on the CPU (--quick): three real sweeps through the
parallel launcher, the JSON's keys and checks, and its markdown section."""
from __future__ import annotations

import json
import shutil

from lab import cli, sweep_throughput


def test_quick_sweep_throughput_writes_the_report(tmp_path, cache_dir):
    """Two calls of one sitting (as two device calls run it): the second adds its stages to the first's JSON."""
    out = tmp_path / "sweep_throughput.json"
    common = ["sweep_throughput", "--quick", "--jobs-per-gpu", "2", "--work-dir", str(tmp_path / "work"),
              "--cache-dir", str(cache_dir), "--out", str(out)]
    cli.main([*common, "--stages", "serial"])
    first = json.loads(out.read_text())
    assert first["packed_wall_s"] is None and first["checks"]["speedup"]["ok"] is None  # not measured: neither met nor missed
    assert "| packed throughput (serial / packed wall) | – " in sweep_throughput.markdown(first)
    # An earlier run of the packed stage in this work dir (its store holds these very runs, finished):
    # the stage runs its jobs again in a fresh store instead of serving those records.
    for part in ("sweep", "store"):
        shutil.copytree(tmp_path / "work" / "serial" / part, tmp_path / "work" / "packed" / part)
    cli.main([*common, "--stages", "packed", "warm_solo", "eval_reference"])
    report = json.loads(out.read_text())
    assert min(r["started_at"] for r in report["packed"]["runs"]) > max(r["finished_at"] for r in first["serial"]["runs"])
    assert len(report["packed"]["runs"]) == 2
    assert set(report["stages_run"]) == {"serial", "packed", "warm_solo", "eval_reference"}
    assert report["serial"] == first["serial"]  # kept from the first call
    commands = {stage: run["command"] for stage, run in report["stages_run"].items()}
    assert commands["serial"].endswith("--stages serial") and commands["packed"].endswith("eval_reference")
    assert report["commit"]["worktree_tree_sha"]  # the code that ran, also where .git is older than the files
    reference = report["eval_reference"]
    assert reference["prompts"] == 4 and reference["hf_generate_s"] > 0 and reference["static_s"] > 0
    assert report["eval_vs_hf_generate"] == reference["hf_generate_s"] / reference["static_s"]
    assert report["checks"]["eval_vs_hf_generate"]["ok"] in (True, False)
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
    assert "Where the serial sweep's" in section and "in fp32 their texts were identical on" in section
    assert section.startswith("## Sweep throughput: 2 runs, serial vs 2 jobs per GPU")
    assert "| lora |" in section and "| none |" in section
    assert "Provenance:" not in section  # only a note written into the JSON by hand is shown
    # --mps (GPU only) makes the packed jobs MPS clients; packed_time_sliced, when named, runs them without
    assert "hydra.launcher.mps=false" in report["packed"]["command"] and report["packed_mps"] is False
    # the packed jobs are admitted by the serial runs' recorded peaks
    assert f"hydra.launcher.peaks_from=[{(tmp_path / 'work' / 'serial' / 'store').resolve()}]" in report["packed"]["command"]
    assert not any(c.startswith("hydra.launcher.peaks_from") for c in report["serial"]["command"])
    assert report["packed_time_sliced_wall_s"] is None and "without MPS" not in section
    with_mps = sweep_throughput.markdown({**report, "packed_mps": True, "packed_time_sliced_wall_s": 200.0,
                                          "speedup_time_sliced": 1.5})
    assert with_mps.startswith("## Sweep throughput: 2 runs, serial vs 2 jobs per GPU under MPS")
    assert "The same packed sweep without MPS" in with_mps and "200 s, 1.50x serial" in with_mps
    assert "Provenance: the tree of commit x" in sweep_throughput.markdown({**report, "provenance_note": "the tree of commit x"})
