"""analysis/results_page.py: the protocol's results page (md + JSON) from selection and final records."""
from __future__ import annotations

import json

import pytest

import analysis.selection
from analysis.collect import collect
from analysis.report import main
from bench.protocol import choose_lr as select_lr
from analysis_records import protocol_record, write

N = 200
BASE = [i % 2 == 0 for i in range(N)]  # full: 50%


def _right(share_of_base_flipped: int, gained: int) -> list[bool]:
    """Full's verdicts with the first `gained` wrong answers made right and the first
    `share_of_base_flipped` right answers made wrong."""
    out = list(BASE)
    wrong = [i for i, v in enumerate(BASE) if not v][:gained]
    right = [i for i, v in enumerate(BASE) if v][:share_of_base_flipped]
    for i in wrong:
        out[i] = True
    for i in right:
        out[i] = False
    return out


def protocol_sweep(root, final_seeds=(0, 1, 2)):
    """Selection: full {1e-5: 40%, 3e-5: 50%}, lora {1e-4: 45%, 2e-4: 45%} (a tie), adagradselect
    {1e-5: 30%, 3e-5: 44%}; final at those lrs, full 50%, adagradselect +10 points over full on every
    seed, lora -5 points; adagradselect at 0.65x full's memory and 0.97x its time."""
    selection = {"full": {1e-5: 80, 3e-5: 100}, "lora": {1e-4: 90, 2e-4: 90}, "adagradselect": {1e-5: 60, 3e-5: 88}}
    t, job = 1000.0, 0
    for method, points in selection.items():
        for lr, right in points.items():
            body, lines = protocol_record(method, "selection", 0, lr, [i < right for i in range(N)], start=t)
            write(root / "selection", f"{job}-{method}-lr{lr:g}", body, lines)
            t, job = t + 50, job + 1
    final = {"none": (0.0, _right(50, 0), 5.0, 0.0), "full": (3e-5, BASE, 10.0, 100.0),
             "lora": (1e-4, _right(10, 0), 6.0, 80.0), "adagradselect": (3e-5, _right(0, 20), 6.5, 97.0)}
    for method, (lr, verdicts, memory, seconds) in final.items():
        for seed in final_seeds:
            body, lines = protocol_record(method, "final", seed, lr, verdicts, start=t, memory=memory,
                                          seconds=seconds or 1.0)
            run = write(root / "final", f"{job}-{method}-s{seed}", body, lines).parent
            if method == "adagradselect":
                (run / "metrics.jsonl").write_text("".join(
                    json.dumps({"step": s, "active_block_ids": [s % 4, 4 + s % 2]}) + "\n" for s in range(1, 31)))
            t, job = t + 200, job + 1
    return root / "selection", root / "final"


def summary_stand_in(metrics_rows, steps_per_epoch, k):
    """A stand-in for analysis.selection.adagradselect_summary (same signature): the synthetic rows carry
    no explore-step norms, and the page is tested here, not the summary (tests/test_adagradselect.py)."""
    first = [r for r in metrics_rows if r["step"] <= steps_per_epoch]
    return {"k": k, "distinct_blocks_epoch1": len({b for r in first for b in r["active_block_ids"]}),
            "final_overlap_with_grad_topk": 1.0}


@pytest.fixture
def with_summary(monkeypatch):
    monkeypatch.setattr(analysis.selection, "adagradselect_summary", summary_stand_in, raising=False)


def test_the_selection_rule_takes_the_best_validation_lr_and_ties_go_to_the_smaller():
    assert select_lr({1e-5: 0.4, 3e-5: 0.5, 1e-4: 0.45}) == 3e-5
    assert select_lr({2e-4: 0.45, 1e-4: 0.45}) == 1e-4


def test_the_results_page_and_json(tmp_path, with_summary, capsys):
    selection, final = protocol_sweep(tmp_path / "sweep")
    out = tmp_path / "docs" / "results" / "smollm2_gsm8k"
    main([str(selection), str(final), "--results", str(out), "--no-plots"])
    assert f"results page: {out}.md, {out}.json" in capsys.readouterr().out
    results = json.loads((tmp_path / "docs" / "results" / "smollm2_gsm8k.json").read_text())
    assert set(results) == {"device", "commit", "wall_clock_s", "protocol", "selection", "methods",
                            "adagradselect_selection"}
    assert set(results["protocol"]) == {"epochs", "seeds", "validation_size", "lr_grid"}
    assert results["protocol"] == {"epochs": 3, "seeds": [0, 1, 2], "validation_size": 500,
                                   "lr_grid": {"full": [1e-5, 3e-5], "lora": [1e-4, 2e-4], "adagradselect": [1e-5, 3e-5]}}
    assert results["device"] == "NVIDIA H100 80GB HBM3" and results["commit"] == "abc"
    # 6 selection runs 50 s apart, then 12 final runs 200 s apart; the last lasts 97 + 10 s.
    assert results["wall_clock_s"] == pytest.approx(5 * 50 + 50 + 11 * 200 + 107)
    assert {(e["method"], e["lr"]): e["val_accuracy"] for e in results["selection"]}[("full", 3e-5)] == 50.0
    assert all(set(e) == {"method", "lr", "val_accuracy"} for e in results["selection"])
    methods = {m["method"]: m for m in results["methods"]}
    assert list(methods) == ["none", "full", "lora", "adagradselect"]
    for entry in methods.values():
        assert set(entry) == {"method", "lr", "seeds", "test_accuracy_mean", "ci95", "vs_full", "vs_lora",
                              "memory_ratio_vs_full", "time_ratio_vs_full"}
    assert methods["lora"]["lr"] == 1e-4 and methods["full"]["lr"] == 3e-5  # lora's tie: the smaller lr
    ours = methods["adagradselect"]
    assert ours["seeds"] == [0, 1, 2] and ours["test_accuracy_mean"] == pytest.approx(60.0)
    assert ours["ci95"][0] < 60 < ours["ci95"][1]
    assert set(ours["vs_full"]) == {"diff", "ci95", "p"} and ours["vs_full"]["diff"] == pytest.approx(10.0)
    assert ours["vs_full"]["ci95"][0] > 0 and ours["vs_lora"]["diff"] == pytest.approx(15.0)
    assert methods["full"]["vs_full"] is None and methods["lora"]["vs_lora"] is None
    assert ours["memory_ratio_vs_full"] == pytest.approx(0.65) and ours["time_ratio_vs_full"] == pytest.approx(0.97)
    summary = results["adagradselect_selection"]
    assert {k: v for k, v in summary.items() if k != "per_seed"} == {"k": 2, "distinct_blocks_epoch1": 6,
                                                                     "final_overlap_with_grad_topk": 1.0}
    assert [s["seed"] for s in summary["per_seed"]] == [0, 1, 2]  # every final run's own summary

    page = (tmp_path / "docs" / "results" / "smollm2_gsm8k.md").read_text()
    assert "## The papers' claims at 135M" in page and "Rules:" in page
    claims = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1] for line in page.splitlines()
              if line.startswith("| ≈") or line.startswith("| close")}
    assert claims == {"≈35% less memory": "*holds*", "≈12% faster": "*does not hold*",
                      "≈3 points above LoRA r=256 on GSM8K": "*holds*", "close to full FT": "*holds*"}
    assert "| full | **50.0** | " in page.replace("| 40.0 ", "")  # the selected grid point in bold


def test_two_final_seeds_decide_no_accuracy_claim(tmp_path, with_summary):
    selection, final = protocol_sweep(tmp_path / "sweep", final_seeds=(0, 1))
    main([str(selection), str(final), "--results", str(tmp_path / "page"), "--no-plots"])
    page = (tmp_path / "page.md").read_text()
    assert "| ≈3 points above LoRA r=256 on GSM8K | *inconclusive* |" in page and "fewer than 3 seeds" in page


def test_without_protocol_records_the_results_page_is_refused(tmp_path, capsys):
    from analysis_records import record

    write(tmp_path, "0-full", record("full", "m", 0, gsm8k=0.5))
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), "--results", str(tmp_path / "page"), "--no-plots"])
    assert exit_.value.code == 2 and "protocol.stage" in capsys.readouterr().err


def test_shared_device_runs_get_no_ratio_on_the_page_without_the_flag(tmp_path, with_summary):
    selection, final = protocol_sweep(tmp_path / "sweep")
    for path in final.rglob("result.json"):
        body = json.loads(path.read_text())
        body["device_share"] = {"gpu_uuid": "GPU-1", "jobs_on_device_max": 2, "launcher_jobs_per_gpu": 2}
        path.write_text(json.dumps(body))
    main([str(selection), str(final), "--results", str(tmp_path / "page"), "--no-plots"])
    ours = {m["method"]: m for m in json.loads((tmp_path / "page.json").read_text())["methods"]}["adagradselect"]
    # time is refused; memory peaks are per process, so a shared card leaves them standing
    assert ours["time_ratio_vs_full"] is None and ours["memory_ratio_vs_full"] == pytest.approx(0.65)
    page = (tmp_path / "page.md").read_text()
    assert "| ≈12% faster | *inconclusive* | refused: the runs shared their GPU (--allow-shared-timings keeps them" in page
    main([str(selection), str(final), "--results", str(tmp_path / "page"), "--no-plots", "--allow-shared-timings"])
    ours = {m["method"]: m for m in json.loads((tmp_path / "page.json").read_text())["methods"]}["adagradselect"]
    assert ours["time_ratio_vs_full"] == pytest.approx(0.97)


def test_a_selection_run_scored_on_the_test_set_is_refused(tmp_path, capsys):
    selection, final = protocol_sweep(tmp_path / "sweep")
    path = sorted(selection.rglob("result.json"))[0]
    body = json.loads(path.read_text())
    body["eval_split"] = "test"
    path.write_text(json.dumps(body))
    with pytest.raises(SystemExit) as exit_:
        main([str(selection), str(final), "--results", str(tmp_path / "page"), "--no-plots"])
    assert exit_.value.code == 2
    assert "protocol.stage=selection but eval_split=test; a selection run is scored on validation" in capsys.readouterr().err


def test_a_resumed_runs_partial_memory_peak_is_left_out_of_the_memory_ratio(tmp_path, with_summary):
    """A run relaunched from a checkpoint records the peak of the part after its relaunch only: its
    memory must not pull the ratio down (here 1 GiB instead of 6.5), and its time stays (the timer is
    part of the checkpoint)."""
    selection, final = protocol_sweep(tmp_path / "sweep")
    path = next(p for p in final.rglob("result.json") if "-adagradselect-s0" in str(p.parent.name))
    body = json.loads(path.read_text())
    body["resumed_from_step"], body["metrics"]["peak_gpu_memory_gib"] = 20, 1.0
    path.write_text(json.dumps(body))
    main([str(selection), str(final), "--results", str(tmp_path / "page"), "--no-plots"])
    ours = {m["method"]: m for m in json.loads((tmp_path / "page.json").read_text())["methods"]}["adagradselect"]
    assert ours["memory_ratio_vs_full"] == pytest.approx(0.65) and ours["time_ratio_vs_full"] == pytest.approx(0.97)
