"""`python -m lab shapes`: rows are slmbench runs of the product's configs; one tiny model, both
loops, the eval engines on two prompts; `lab.report` renders its JSON. Figures are never
asserted; what is asserted is that the lab measures the very run `slmbench` runs."""
from __future__ import annotations

import json

import pytest

from lab.cli import main as lab, parse_args
from lab.shapes import row_config
from lab.workload import compose
from conftest import HUB_ASSETS, SHARED_DATA, run_cli

SMALL = ["task.train.limit=48", "train.max_seq_len=256"]
QUICK = ["--set", *SMALL, "--device", "cpu", "--data-dir", str(SHARED_DATA)]


@HUB_ASSETS
def test_perf_runs_both_loops_and_eval_and_the_report_renders(tmp_path):
    out = tmp_path / "perf.json"
    lab(["shapes", "--models", "tiny-llama3.2", "--methods", "full", "static25", "--plain", "full", "static25",
               "--steps", "1", "--warmup", "1", "--batch-size", "2",
               "--eval-models", "tiny-llama3.2", "--eval-engines", "static", "hf", "--eval-limit", "2",
               "--eval-max-new-tokens", "3", "--static-batch-size", "2", "--hf-batch-size", "2", *QUICK,
               "--out", str(out)])
    report = json.loads(out.read_text())
    runs = {(r["loop"], r["method"]): r for r in report["train"]}
    assert set(runs) == {("plain", "full"), ("harness", "full"), ("plain", "static25"), ("harness", "static25")}
    assert all(r["status"] == "ok" and r["median_step_s"] > 0 for r in runs.values()), runs
    # Both loops trained the same block set, and only those blocks.
    assert runs[("plain", "static25")]["blocks"] == runs[("harness", "static25")]["blocks"]
    assert runs[("plain", "static25")]["trainable_params"] == runs[("harness", "static25")]["trainable_params"]
    assert runs[("plain", "static25")]["trainable_params"] < runs[("plain", "full")]["trainable_params"]
    # Fed the same batches from the same initial weights, the plain loop's first loss is the harness's.
    assert abs(runs[("plain", "full")]["losses"][0] - runs[("harness", "full")]["losses"][0]) < 1e-6
    rows = {r["method"]: r for r in report["table"]}
    assert rows["static25"]["step_harness_over_plain"] is not None and rows["static25"]["step_over_full"] is not None
    engines = {r["method"]: r for r in report["eval"]}
    assert engines["static"]["status"] == engines["hf"]["status"] == "ok"
    # fp32 on the CPU: greedy decoding by either engine gives the same texts (docs/performance-analysis.md:
    # 256/256 in fp32 on a GPU); a mismatch here is an engine bug, not noise.
    assert engines["static"]["precision"] == "fp32"
    assert engines["static"]["identical_to_other_engine"] >= 0.995

    page = tmp_path / "performance.md"
    lab(["report", str(out), "--out", str(page)])
    text = page.read_text()
    assert report["command"] in text and "| tiny-llama3.2 | static25 |" in text


@HUB_ASSETS
def test_harness_row_is_the_slmbench_run(tmp_path, cache_dir):
    """One code path: the lab's harness row and `slmbench` with the row's own overrides give the
    same loss trajectory (to 1e-6)."""
    out = tmp_path / "perf.json"
    lab(["shapes", "--models", "tiny-qwen2.5", "--methods", "topk", "--plain", "--steps", "4", "--warmup", "1",
               "--batch-size", "2", "--lr", "1e-3", "--eval-models", *QUICK, "--out", str(out)])
    (row,) = json.loads(out.read_text())["train"]
    assert row["status"] == "ok" and len(row["losses"]) == 5
    run_cli(tmp_path, *row["overrides"], f"cache_dir={cache_dir}", "eval.limit=1")
    (metrics,) = list((tmp_path / "outputs" / "runs").rglob("metrics.jsonl"))
    cli_losses = [json.loads(line)["loss"] for line in metrics.read_text().splitlines()]
    assert len(cli_losses) == 5
    assert max(abs(a - b) for a, b in zip(cli_losses, row["losses"])) < 1e-6


@HUB_ASSETS
def test_fast_path_rows_compare_with_full_on_the_same_loss_path(tmp_path):
    """--fast-methods: chunked-loss rows for full and a block method; method/full pairs rows of the
    same loss path; --set reaches every row; no plain rows asked, none run."""
    out = tmp_path / "perf.json"
    lab(["shapes", "--models", "tiny-qwen2.5", "--methods", "--plain", "--fast-methods", "full", "topk",
               "--steps", "1", "--warmup", "1", "--batch-size", "2", "--eval-models", "--device", "cpu",
               "--data-dir", str(SHARED_DATA), "--set", *SMALL, "train.gradient_checkpointing=true", "--out", str(out)])
    report = json.loads(out.read_text())
    assert [(r["loop"], r["method"], r["fast_path"]) for r in report["train"]] == [
        ("harness", "full", "chunked_ce"), ("harness", "topk", "chunked_ce")]
    assert all(r["status"] == "ok" and r["gradient_checkpointing"] for r in report["train"])
    topk = next(r for r in report["table"] if r["method"] == "topk")
    full = next(r for r in report["train"] if r["method"] == "full")
    mine = next(r for r in report["train"] if r["method"] == "topk")
    assert topk["step_over_full"] == mine["median_step_s"] / full["median_step_s"]


@HUB_ASSETS
def test_method_rows_take_knobs():
    """`--methods adagradselect:policy=keep` measures a method with a knob changed, as
    `slmbench method=adagradselect method.policy=keep` would run it; hub models become their real
    shape with random weights from the data dir."""
    args = parse_args(["shapes", "--models", "llama3.2-1b", "--data-dir", str(SHARED_DATA)])
    cfg, overrides = row_config(args, "llama3.2-1b", "adagradselect:policy=keep,k_percent=10")
    assert (cfg.method.policy, cfg.method.k_percent) == ("keep", 10)
    assert cfg.model.init == "random" and cfg.model.path.endswith("models/meta-llama__Llama-3.2-1B")
    assert compose(overrides).method.policy == "keep"


def test_warm_shapes_runs_each_shape_once_and_leaves_the_weights():
    """The untimed pass before a pair's timed steps: one forward/backward per distinct batch shape,
    no gradient kept, no weight changed, the random state as it was (dropout draws inside are
    undone), the model in train mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lab.loops import warm_shapes

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, attention_dropout=0.5))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    forwards = []
    model.register_forward_hook(lambda module, args, output: forwards.append(1))

    def batch(width):
        ids = torch.randint(0, 64, (2, width))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    batches = [batch(5), batch(7), batch(5), batch(7), batch(9)]
    rng = torch.get_rng_state()
    assert warm_shapes(model, batches, torch.device("cpu"), "fp32") == 3
    assert torch.equal(torch.get_rng_state(), rng) and model.training
    assert len(forwards) == 3
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_host_activity_counts_collector_passes_and_stops_and_resumes():
    import gc
    import threading
    from lab.loops import HostActivity

    release = threading.Event()
    helper = threading.Thread(target=release.wait, name="probe-helper", daemon=True)
    helper.start()
    with HostActivity() as host:
        gc.collect()  # one full (generation 2) pass, seen through gc.callbacks
        host.stop()
        gc.collect()  # after stop: not counted
        wall = host.wall_s
        host.start()  # resumed (an overhead pair's turns): counted again, added to the first span
        gc.collect()
    release.set()
    summary = host.summary()
    assert summary["gc_collections"] == [0, 0, 2] and summary["gc_s"] > 0 and summary["wall_s"] > wall
    assert "probe-helper" in summary["threads"] and summary["global_module_hooks"] == 0
    assert host._on_gc not in gc.callbacks


@pytest.mark.parametrize("log_every", [1, 2])
def test_an_overhead_pair_takes_turns_on_the_same_batches(cache_dir, log_every):
    """The plain side runs the batches the run just trained on each time the run's timer closes a
    window (every step, or every train.log_every), so at each harness step's start the plain loop
    has run exactly the steps the timer has closed; then its profiled step, untimed, and it is
    let go. Same seed, same batch: the plain loop's first loss is the run's first loss."""
    import torch

    from lab.loops import HostActivity, PlainLoop, PlainTurns, StepLog, resident_bytes
    from lab.workload import draw_batches
    from bench.run.recipe import Run
    from conftest import compose_config

    cpu = torch.device("cpu")
    cfg = compose_config("train.max_steps=6", "device=cpu", "wandb.mode=disabled", f"cache_dir={cache_dir}",
                         "train.precision=fp32", f"train.log_every={log_every}", "train.warmup_steps=0")
    run = Run.build(cfg)
    batches = draw_batches(run, 5)  # a window of 4 timed steps, then 1 profiled
    twin = PlainTurns(PlainLoop(Run.build(cfg).model, "full", cfg.train.lr, cfg.train.grad_clip, cpu, "fp32"),
                      batches, 1, lambda: resident_bytes(run.model, run.state.optimizer, cpu))
    seen = []

    class PlainStepsDone:
        def step_start(self, step):
            seen.append(twin.done)

        def step_end(self, step, metrics):
            pass

    log = StepLog()
    with HostActivity() as host:
        twin.begin(host)
        run.train(until=6, observers=[log, twin, PlainStepsDone()])
        twin.end()
    # the profiled fifth step follows the fourth at once (no harness step inside the profiler's span)
    assert seen == ([0, 1, 2, 3, 5, 5] if log_every == 1 else [0, 0, 2, 2, 5, 5])
    assert twin.loop is None and twin.done == 5
    figures = twin.figures(warmup=1)
    assert len(figures["step_seconds"]) == figures["steps_trained"] == figures["host"]["steps"] == 4
    assert figures["profile"]["profile_table"]  # the fifth batch ran under the profiler
    assert 0 < figures["host"]["wall_s"] and host.wall_s > 0
    assert figures["peak_gpu_gib"] is None  # CPU: no device memory to count
    if log_every == 1:
        assert twin.result["losses"][0] == pytest.approx(log.losses[0], abs=1e-5)


def test_compile_seconds_since_counts_only_the_compiles_after_it():
    """A row's first-steps breakdown: torch.compile's phases spent after a snapshot, none before."""
    import torch

    from lab.loops import compile_seconds, compile_seconds_since

    before = compile_seconds()
    assert compile_seconds_since(before) == {}
    torch._dynamo.reset()
    torch.compile(lambda x: (x.sin() + 1).sum(), backend="eager")(torch.randn(4))
    spent = compile_seconds_since(before, at_least=0.0)
    assert spent["_compile.compile_inner"] > 0
    assert compile_seconds_since(compile_seconds()) == {}  # nothing compiled since
