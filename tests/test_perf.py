"""`python -m bench.perf.lab` keeps working: one tiny shape, two methods, both loops, a couple of steps,
the eval engines on two prompts; and `bench.perf.report` renders its JSON. Figures are never asserted."""
from __future__ import annotations

import json

from bench.perf import lab as perf, report as perf_report
from tests.conftest import SHARED_DATA


def test_perf_runs_both_loops_and_eval_and_the_report_renders(tmp_path):
    out = tmp_path / "perf.json"
    perf.main(["--shapes", "tiny-llama", "--methods", "full", "static25", "--plain", "full", "static25",
               "--steps", "1", "--warmup", "1", "--seq-len", "32", "--batch-size", "1",
               "--eval-shapes", "tiny-llama", "--eval-engines", "static", "hf", "--eval-limit", "2",
               "--eval-max-new-tokens", "3", "--static-batch-size", "2", "--hf-batch-size", "2",
               "--device", "cpu", "--data-dir", str(SHARED_DATA), "--out", str(out)])
    report = json.loads(out.read_text())
    runs = {(r["loop"], r["method"]): r for r in report["train"]}
    assert set(runs) == {("plain", "full"), ("harness", "full"), ("plain", "static25"), ("harness", "static25")}
    assert all(r["status"] == "ok" and r["median_step_s"] > 0 for r in runs.values())
    # Both loops trained the same block set, and only those blocks.
    assert runs[("plain", "static25")]["blocks"] == runs[("harness", "static25")]["blocks"] == [3]  # 25% of 4 blocks, seed 0
    assert runs[("plain", "static25")]["trainable_params"] == runs[("harness", "static25")]["trainable_params"]
    assert runs[("plain", "static25")]["trainable_params"] < runs[("plain", "full")]["trainable_params"]
    rows = {r["method"]: r for r in report["table"]}
    assert rows["static25"]["step_harness_over_plain"] is not None and rows["static25"]["step_over_full"] is not None
    engines = {r["method"]: r for r in report["eval"]}
    assert engines["static"]["status"] == engines["hf"]["status"] == "ok"
    assert engines["static"]["identical_to_other_engine"] is not None

    page = tmp_path / "performance.md"
    perf_report.main([str(out), "--out", str(page)])
    text = page.read_text()
    assert report["command"] in text and "| tiny-llama | static25 |" in text


def test_fast_path_rows_compare_with_full_on_the_same_loss_path(tmp_path):
    """--fast-methods: chunked-loss rows for full and a block method; method/full pairs rows of the
    same loss path; --gradient-checkpointing on reaches every row; no plain rows asked, none run."""
    out = tmp_path / "perf.json"
    perf.main(["--shapes", "tiny-qwen2", "--methods", "--plain", "--fast-methods", "full", "topk",
               "--gradient-checkpointing", "on", "--steps", "1", "--warmup", "1", "--seq-len", "32",
               "--batch-size", "1", "--eval-shapes", "--device", "cpu", "--data-dir", str(SHARED_DATA),
               "--out", str(out)])
    report = json.loads(out.read_text())
    assert [(r["loop"], r["method"], r["fast_path"]) for r in report["train"]] == [
        ("harness", "full", "chunked_ce"), ("harness", "topk", "chunked_ce")]
    assert all(r["status"] == "ok" and r["gradient_checkpointing"] for r in report["train"])
    topk = next(r for r in report["table"] if r["method"] == "topk")
    full = next(r for r in report["train"] if r["method"] == "full")
    mine = next(r for r in report["train"] if r["method"] == "topk")
    assert topk["step_over_full"] == mine["median_step_s"] / full["median_step_s"]


def test_method_rows_take_knobs():
    """`--methods adagradselect:policy=keep` measures a method with a knob changed, as
    `slmbench method=adagradselect method.policy=keep` would run it."""
    method = perf.build_method("adagradselect:policy=keep,k_percent=10", blocks=[0])
    assert (type(method).__name__, method.policy, method.k_percent) == ("AdaGradSelect", "keep", 10)
    assert perf.build_method("adagradselect", blocks=[0]).policy == "offload"
