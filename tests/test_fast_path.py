"""The chunked linear cross-entropy equals HF's loss and gradients (CPU, tiny models, fp32 and bf16)."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from bench.data.batching import IGNORE_INDEX
from bench.loss import chunk_slices, chunked_lm_loss, chunked_mean_loss, loss_positions, training_loss
from bench.models.loading import build_tiny
from bench.models.tokenizer import build_arithmetic_tokenizer


def tiny(arch: str):
    tokenizer = build_arithmetic_tokenizer()
    cfg = OmegaConf.create({"arch": arch, "dims": {"hidden_size": 64, "intermediate_size": 128,
                                                    "num_hidden_layers": 2, "num_attention_heads": 4,
                                                    "num_key_value_heads": 2, "max_position_embeddings": 64}})
    torch.manual_seed(0)
    return build_tiny(cfg, tokenizer)


def batch():
    gen = torch.Generator().manual_seed(1)
    input_ids = torch.randint(4, 60, (3, 20), generator=gen)
    labels = input_ids.clone()
    labels[:, :7] = IGNORE_INDEX  # a masked prompt
    labels[2, 15:] = IGNORE_INDEX  # and right padding on one row
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 15:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def loss_and_grads(model, fn):
    model.zero_grad(set_to_none=True)
    loss = fn()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch, chunk_rows", [("qwen2", 5), ("llama", 5), ("phi3", 5), ("llama", 11)])
def test_chunked_loss_and_grads_equal_the_unfused_path_fp32(arch, chunk_rows):
    """chunk_rows=5: several chunks and a ragged last one; 11: 34 loss rows, so the last chunk's
    one row moves into the chunk before it (chunk_slices)."""
    model, b = tiny(arch), batch()
    n = int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert n == 34
    ref_loss, ref_grads = loss_and_grads(model, lambda: training_loss(model, b, n, "none"))
    loss, grads = loss_and_grads(model, lambda: chunked_lm_loss(model, b, n, chunk_rows=chunk_rows))
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, ref_grads[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("rows", [1, 2, 3, 511, 512, 513, 514, 1024, 1025, 1537])
def test_loss_chunks_cover_every_row_once_and_none_holds_one_row(rows):
    """A one-row chunk would make torch.compile build a second graph of the chunk's kernel."""
    chunks = chunk_slices(rows, 512)
    assert [i for chunk in chunks for i in range(rows)[chunk]] == list(range(rows))
    sizes = [chunk.stop - chunk.start for chunk in chunks]
    assert max(sizes) <= 512 and (rows == 1 or min(sizes) >= 2)
    assert chunk_slices(3, 2) == [slice(0, 2), slice(2, 3)]  # at chunk_rows 2 no row can move


def test_chunked_loss_equals_the_unfused_path_under_bf16_autocast():
    model, b = tiny("llama"), batch()
    n = 2 * int((b["labels"][:, 1:] != IGNORE_INDEX).sum())  # a window's divisor larger than this batch's count
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = training_loss(model, b, n, "none")
        got = training_loss(model, b, n, "chunked_ce")
    assert got.dtype == torch.float32
    assert torch.allclose(got, ref.float(), rtol=2e-2)  # bf16 tolerance


def test_loss_positions_are_the_masked_gather_of_shifted_labels():
    b = batch()
    positions, targets = loss_positions(b["labels"])
    keep = b["labels"][:, 1:] != IGNORE_INDEX
    hidden = torch.arange(3 * 20).reshape(3, 20)  # each position's flat index as its "hidden state"
    assert torch.equal(hidden.flatten().index_select(0, positions), hidden[:, :-1][keep])
    assert torch.equal(targets, b["labels"][:, 1:][keep])


@pytest.mark.parametrize("arch", ["qwen2", "phi3"])
def test_chunked_mean_loss_equals_hf_mean_loss(arch):
    """IST's rollout probe: the mean loss without full logits, padded rows included."""
    model, b = tiny(arch), batch()
    with torch.no_grad():
        ref = model(**b).loss
    assert chunked_mean_loss(model, b, chunk_rows=4) == pytest.approx(float(ref), rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled chunk kernel runs on CUDA only")
def test_compiled_chunk_equals_eager_on_cuda():
    from bench.loss import _ce_chunk, _compiled_ce_chunk

    gen = torch.Generator(device="cuda").manual_seed(0)
    for rows in (64, 37):  # a full chunk and a ragged one (dynamic shapes)
        logits = torch.randn(rows, 50_000, device="cuda", generator=gen).to(torch.bfloat16) * 4
        targets = torch.randint(0, 50_000, (rows,), device="cuda", generator=gen)
        loss, grad = _compiled_ce_chunk()(logits, targets, 123.0)
        ref_loss, ref_grad = _ce_chunk(logits, targets, 123.0)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=1.6e-2, atol=1e-6)  # bf16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA: the fast path as the device runs it")
@pytest.mark.parametrize("arch", ["qwen2", "llama", "phi3"])
def test_chunked_training_loss_equals_unfused_on_cuda_bf16(arch):
    model, b = tiny(arch).cuda(), batch()
    n = int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ref_loss, ref_grads = loss_and_grads(model, lambda: training_loss(model, b, n, "none", torch.device("cuda")))
        loss, grads = loss_and_grads(model, lambda: training_loss(model, b, n, "chunked_ce", torch.device("cuda")))
    torch.testing.assert_close(loss, ref_loss.float(), rtol=2e-2, atol=1e-3)
    head = model.get_output_embeddings().weight
    name = next(n for n, p in model.named_parameters() if p is head)
    assert torch.nn.functional.cosine_similarity(grads[name].flatten(), ref_grads[name].flatten(), dim=0) > 0.99


@pytest.mark.parametrize("fast_path", ["none", "chunked_ce"])
def test_compiled_layers_share_one_graph(fast_path):
    """train.compile: every decoder layer runs the same compiled graph. A per-layer recompile
    (e.g. a KV cache's layer index) would leave the layers past the recompile limit (8) eager."""
    from torch._dynamo.utils import counters

    from bench.compiled import compile_decoder_layers

    torch._dynamo.reset()
    counters.clear()
    model = tiny("llama")
    model.model.layers.extend(type(model.model.layers[0])(model.config, i) for i in range(2, 10))  # 10 layers
    model.config.num_hidden_layers = 10
    compile_decoder_layers(model, backend="aot_eager")  # Inductor would need a C++ compiler here
    b = batch()
    n = int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
    training_loss(model, b, n, fast_path).backward()
    assert counters["stats"]["unique_graphs"] == 1
    assert counters["frames"]["ok"] == 1
    torch._dynamo.reset()


def test_inductor_compiles_with_the_harness_options(monkeypatch):
    """The decoder layers and the chunked loss's kernel reach Inductor with bench/runtime.py
    INDUCTOR_OPTIONS (they shorten a compile with empty caches); the CPU tests' dynamo backends,
    which take no Inductor options, get none. Compiling is lazy: nothing compiles here."""
    from bench import loss
    from bench.compiled import compile_decoder_layers
    from bench.models.loading import decoder_layers
    from bench.runtime import INDUCTOR_OPTIONS

    seen, compile_ = [], torch.compile

    def recording(fn, **kwargs):
        seen.append(kwargs)
        return compile_(fn, **kwargs)
    monkeypatch.setattr(torch, "compile", recording)
    model = tiny("llama")
    layers = len(decoder_layers(model))
    compile_decoder_layers(model)
    compile_decoder_layers(model, backend="aot_eager")
    loss._compiled_ce_chunk.cache_clear()
    try:
        loss._compiled_ce_chunk()
    finally:
        loss._compiled_ce_chunk.cache_clear()  # later tests compile the kernel unwatched
    assert seen == [{"backend": "inductor", "options": INDUCTOR_OPTIONS}] * layers + [{"backend": "aot_eager"}] * layers \
        + [{"dynamic": True, "options": INDUCTOR_OPTIONS}]
    assert INDUCTOR_OPTIONS == {"triton.autotune_pointwise": False}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Inductor compiles for CUDA here (on CPU it needs a C++ toolchain)")
def test_compiled_layers_time_fewer_launch_configs_and_train_as_eager_on_cuda():
    """Under INDUCTOR_OPTIONS Inductor times fewer launch configs, with empty caches, than its
    default on the same layers (the pointwise kernels' are no longer timed; reductions' and
    pad_mm's still are), and the compiled layers' loss and gradients equal the plain layers' (bf16)."""
    import torch._inductor.utils
    from torch._dynamo.utils import counters

    from bench.compiled import compile_decoder_layers
    from bench.models.loading import decoder_layers
    from bench.runtime import INDUCTOR_OPTIONS

    timed = "benchmarking.InductorBenchmarker.benchmark_gpu"
    b = {k: v.cuda() for k, v in batch().items()}
    n = int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
    results, timings = {}, {}
    for options in (None, INDUCTOR_OPTIONS):  # None: Inductor's default options; the plain layers come after
        # Empty caches, on disk and in the process: a kernel compiled before (an earlier process or
        # test) comes back with its launch config chosen, from the FX-graph cache or from the best
        # config Inductor keeps beside the kernel's source (torch/_inductor/runtime/autotune_cache.py).
        with torch._inductor.utils.fresh_cache():
            torch._dynamo.reset()
            counters.clear()
            model = tiny("llama").cuda()
            if options is None:
                for layer in decoder_layers(model):
                    layer.compile()  # Inductor's default options
            else:
                compile_decoder_layers(model)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                results[options is not None] = loss_and_grads(
                    model, lambda: training_loss(model, b, n, "chunked_ce", torch.device("cuda")))
            assert counters["stats"]["unique_graphs"] >= 1  # dynamo handed the layers' graph to Inductor
            timings[options is not None] = counters["inductor"][timed]
    assert 0 < timings[True] < timings[False], timings
    torch._dynamo.reset()
    model = tiny("llama").cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ref_loss, ref_grads = loss_and_grads(model, lambda: training_loss(model, b, n, "chunked_ce", torch.device("cuda")))
    for loss, grads in results.values():
        torch.testing.assert_close(loss, ref_loss, rtol=2e-2, atol=1e-3)
        for name, grad in grads.items():
            assert torch.nn.functional.cosine_similarity(grad.flatten().float(), ref_grads[name].flatten().float(),
                                                         dim=0) > 0.99, name


def test_evaluation_after_train_compile_runs_the_plain_layers(monkeypatch, cache_dir):
    """A run with train.compile=true evaluates through the layers' plain forward (no recompiles for
    the generation's cache and shapes), and its layers are compiled again afterwards."""
    import bench.run.recipe as recipe
    from bench.compiled import compile_decoder_layers
    from bench.models.loading import decoder_layers
    from conftest import compose_config

    # Inductor would need a C++ compiler here: the same compile, with dynamo's eager backend.
    monkeypatch.setattr(recipe, "compile_decoder_layers", lambda model: compile_decoder_layers(model, backend="eager"))
    seen = []
    evaluate = recipe.evaluate

    def watched(model, *args, **kwargs):
        seen.append([layer._compiled_call_impl for layer in decoder_layers(model)])
        return evaluate(model, *args, **kwargs)
    monkeypatch.setattr(recipe, "evaluate", watched)
    run = recipe.Run.build(compose_config("train.max_steps=1", "train.compile=true", "device=cpu", "eval.limit=4",
                                          "wandb.mode=disabled", f"cache_dir={cache_dir}"))
    compiled = [layer._compiled_call_impl for layer in decoder_layers(run.model)]
    assert all(call is not None for call in compiled)
    run.train()
    run.evaluate()
    assert seen == [[None] * len(compiled)]
    assert [layer._compiled_call_impl for layer in decoder_layers(run.model)] == compiled
    torch._dynamo.reset()


GRAPH_RUN = ("train.batching=packed", "train.fast_path=chunked_ce", "train.cuda_graphs=true", "train.max_steps=3",
             "wandb.mode=disabled", "eval.limit=4")


@pytest.mark.parametrize("override, message", [
    ("train.batching=random", "train.cuda_graphs=true needs train.batching=packed"),
    ("train.fast_path=none", "train.cuda_graphs=true needs train.fast_path=chunked_ce"),
    ("train.grad_accum=2", "train.cuda_graphs=true needs train.grad_accum=1"),
    ("train.gradient_checkpointing=true", "train.cuda_graphs=true needs train.gradient_checkpointing=False"),
    ("method=topk", r"needs a method that keeps its trainable set .* methods.topk.TopK does not"),
    ("method=lisa", r"methods.lisa.LISA does not \(its set changes between steps, and re-capturing per set is not"),
    ("method=badam", r"methods.badam.BAdam does not"),
])
def test_cuda_graphs_refuses_what_a_replayed_decoder_cannot_run(override, message):
    from bench.config.checks import check
    from bench.errors import ConfigError
    from conftest import compose_config

    check(compose_config(*GRAPH_RUN))  # the supported combinations pass
    check(compose_config(*GRAPH_RUN, "method=lora"))
    with pytest.raises(ConfigError, match=message):
        check(compose_config(*GRAPH_RUN, override))


def test_cuda_graphs_on_a_cpu_run_stops_at_build(cache_dir):
    """No silent fallback to the eager decoder: the run names the key and the device."""
    from bench.errors import ConfigError
    from bench.run.recipe import Run
    from conftest import compose_config

    with pytest.raises(ConfigError, match="train.cuda_graphs=true needs a CUDA device; this run's device is cpu"):
        Run.build(compose_config(*GRAPH_RUN, "device=cpu", f"cache_dir={cache_dir}"))


def test_cuda_graphs_auto_replays_only_where_nothing_blocks_it(cache_dir, caplog):
    """`auto` passes the checks where `true` is refused, and the run says why its decoder is not
    replayed: here a CPU device and a method that changes its trainable set; unknown values are refused."""
    from bench.config.checks import check
    from bench.errors import ConfigError
    from bench.run.recipe import Run
    from conftest import compose_config

    auto = (*GRAPH_RUN, "train.cuda_graphs=auto", "device=cpu", f"cache_dir={cache_dir}")
    check(compose_config(*auto, "method=topk"))
    with caplog.at_level("INFO", logger="bench.run.recipe"):
        run = Run.build(compose_config(*auto, "method=topk"))
        run.train()
    assert run.performance_record()["fast_path"]["cuda_graphs"] is False
    assert run.history and all(h["loss"] is not None for h in run.history)
    message = "\n".join(r.getMessage() for r in caplog.records if "cuda_graphs=auto" in r.getMessage())
    assert "needs a CUDA device (this run's is cpu)" in message
    assert "methods.topk.TopK does not" in message
    assert Run.build(compose_config(*auto, "method=full")).replays_decoder() is False
    with pytest.raises(ConfigError, match=r"train.cuda_graphs='yes'; allowed: False, True, auto"):
        check(compose_config(*GRAPH_RUN, "train.cuda_graphs=yes"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs: CUDA only")
@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("compiled", [False, True])
def test_replayed_decoder_trains_as_the_called_one_on_cuda(cache_dir, compiled, method):
    """Three steps of full fine-tuning (and of LoRA, without dropout) through the run, fp32 (no bf16
    noise): the replayed decoder's losses and final weights equal the called decoder's (tied
    embedding included), also when the captured layers are compiled ones, and a batch of another
    shape is refused."""
    from bench.run.recipe import Run
    from conftest import compose_config

    torch.backends.cuda.matmul.allow_tf32 = False
    torch._dynamo.reset()
    runs = {}
    for graphs in ("false", "true"):
        lora = ("method.r=8", "method.lora_alpha=16", "method.lora_dropout=0.0") if method == "lora" else ()
        run = Run.build(compose_config(*GRAPH_RUN, f"method={method}", *lora, f"train.cuda_graphs={graphs}",
                                       "device=cuda", "train.precision=fp32", f"train.compile={str(compiled).lower()}",
                                       f"cache_dir={cache_dir}"))
        run.train()
        runs[graphs] = run
    eager, graphed = runs["false"], runs["true"]
    assert graphed.state.decoder_graph.graphed is not None and eager.state.decoder_graph is None
    assert graphed.performance_record()["fast_path"]["cuda_graphs"] is True
    auto = Run.build(compose_config(*GRAPH_RUN, f"method={method}", *lora, "train.cuda_graphs=auto", "device=cuda",
                                    f"cache_dir={cache_dir}"))
    assert auto.replays_decoder()  # nothing blocks it here: auto replays
    assert graphed.state.decoder_graph.capture_seconds > 0  # the first steps' breakdown reads it
    assert [h["loss"] for h in graphed.history] == pytest.approx([h["loss"] for h in eager.history], rel=1e-5)
    for (name, p), q in zip(eager.model.named_parameters(), graphed.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    torch._dynamo.reset()
    ids = torch.zeros((1, 8), dtype=torch.long, device="cuda")
    with pytest.raises(RuntimeError, match="needs one shape"):
        graphed.state.decoder_graph(ids, ids)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs: CUDA only")
def test_a_released_graphed_run_gives_its_training_memory_back_on_cuda(cache_dir):
    """After training, the replayed decoder's pool stays reserved while its graphs live; released
    (as the ledger does before evaluation), the allocator hands it back, and the record still says
    the decoder was replayed."""
    import gc

    from bench.run.recipe import Run
    from conftest import compose_config

    run = Run.build(compose_config(*GRAPH_RUN, "method=full", "device=cuda", f"cache_dir={cache_dir}"))
    run.train()
    gc.collect()
    torch.cuda.empty_cache()
    trained = torch.cuda.memory_reserved()
    run.release_training_memory()
    gc.collect()
    torch.cuda.empty_cache()
    released = torch.cuda.memory_reserved()
    assert released < trained, (trained, released)
    assert run.performance_record()["fast_path"]["cuda_graphs"] is True
    run.evaluate()  # evaluation runs on the released run


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compile workers are started for CUDA runs only")
def test_a_compiling_cuda_run_starts_inductors_workers_while_it_is_set_up(cache_dir):
    """The kernel-compiling worker processes boot during the run's setup, not in its first step."""
    from torch._inductor import async_compile

    from bench.run.recipe import Run
    from conftest import compose_config

    if async_compile.get_compile_threads() <= 1:
        pytest.skip("a single compile thread: Inductor compiles in this process, no workers")
    async_compile.shutdown_compile_workers()  # earlier tests' compiles may have started them
    async_compile.AsyncCompile.process_pool.cache_clear()
    Run.build(compose_config(*GRAPH_RUN, "device=cuda", "train.compile=true", f"cache_dir={cache_dir}"))
    assert async_compile.AsyncCompile.process_pool.cache_info().currsize == 1


def _scaled_sum(x: torch.Tensor, scale: float) -> torch.Tensor:
    return (torch.tanh(x) * scale).sum(-1)


def test_compile_ahead_compiles_in_its_thread_the_graph_the_caller_then_calls():
    """A graph CompileAhead compiled in its thread is the one the caller's later calls run: dynamo
    keeps it on the function's code object, so a call of another (dynamic) size and scale compiles
    nothing more, and its value is the eager one. Submissions run in order, one at a time."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from bench.compiled import CompileAhead

    torch._dynamo.reset()
    compiled, order = torch.compile(_scaled_sum, backend="aot_eager", dynamic=True), []
    ahead = CompileAhead()
    ahead.submit("graph", lambda: (order.append("graph"), compiled(torch.ones(4, 8), 2.0)))
    ahead.submit("after", lambda: order.append("after"))
    ahead.wait()
    assert order == ["graph", "after"] and list(ahead.seconds) == ["graph", "after"]
    assert len(_debug_get_cache_entry_list(_scaled_sum.__code__)) == 1
    x = torch.linspace(-2, 2, 7 * 5).view(7, 5)
    torch.testing.assert_close(compiled(x, 0.5), _scaled_sum(x, 0.5))
    assert len(_debug_get_cache_entry_list(_scaled_sum.__code__)) == 1  # no second graph
    record = ahead.record()
    assert list(record["seconds"]) == ["graph", "after"] and record["first_step_waited_s"] >= 0
    ahead.wait()
    assert ahead.record()["first_step_waited_s"] == record["first_step_waited_s"]  # waited once
    torch._dynamo.reset()


def test_a_compile_ahead_that_fails_says_so_and_the_next_still_runs(caplog):
    """What fails in the thread is logged with its name and traceback (the first step then compiles
    it itself), and what was submitted after it still runs."""
    from bench.compiled import CompileAhead

    def broken():
        raise RuntimeError("no compiler here")
    ran = []
    ahead = CompileAhead()
    with caplog.at_level("WARNING", logger="bench.compiled"):
        ahead.submit("broken", broken)
        ahead.submit("next", lambda: ran.append(True))
        ahead.wait()
    assert ran == [True] and list(ahead.seconds) == ["broken", "next"]
    (warning,) = [r for r in caplog.records if "compiling broken ahead" in r.getMessage()]
    assert "the first training step compiles it itself" in warning.getMessage()
    assert "no compiler here" in str(warning.exc_info[1])


def test_a_cpu_run_compiles_nothing_ahead_and_its_first_step_waits_inside_its_time(cache_dir):
    """Compiling ahead is for CUDA runs that compile: on the CPU nothing is submitted, and the first
    step's (empty) wait is recorded (result.json's compile.ahead). What is submitted is waited for
    inside the first step: the step timer has started before the wait ends, so the run's time holds it."""
    import threading
    import time

    from bench.run.recipe import Run
    from conftest import compose_config

    cfg = compose_config("train.max_steps=2", "train.compile=false", f"cache_dir={cache_dir}")
    run = Run.build(cfg)
    run.train()
    assert run.performance_record()["compile"]["ahead"] == {"seconds": {}, "first_step_waited_s": 0.0}

    run, release, step_began, seen = Run.build(cfg), threading.Event(), threading.Event(), {}

    def held():  # a compile that ends only once the step timer has started
        release.wait(timeout=10)
        seen["step_began_before_it_ended"] = step_began.wait(timeout=1.0)
        seen["ended"] = time.perf_counter()
    run.compile_ahead.submit("held", held)
    start_timer, start_method = run.timer.step_start, run.method.on_step_start

    def timer_then_release(step):
        start_timer(step)
        seen.setdefault("timer_started", run.timer._t0)
        release.set()

    def method_start(step, model):
        step_began.set()
        start_method(step, model)
    run.timer.step_start, run.method.on_step_start = timer_then_release, method_start
    run.train()
    assert seen["step_began_before_it_ended"] is False  # the step waited for it
    assert seen["timer_started"] <= seen["ended"]  # inside the step's time
    assert list(run.performance_record()["compile"]["ahead"]["seconds"]) == ["held"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled ahead for CUDA runs only")
def test_a_compiling_cuda_run_compiles_its_first_graphs_and_the_loss_kernel_while_it_is_set_up(cache_dir, caplog):
    """A compiling CUDA run builds Triton's driver, compiles a first graph and the chunked loss's
    kernel while it is set up; its steps then call that kernel (no second graph of it), and no
    compile ahead failed."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from bench.loss import _ce_chunk
    from bench.run.recipe import Run
    from conftest import compose_config

    torch._dynamo.reset()
    with caplog.at_level("WARNING", logger="bench.compiled"):
        run = Run.build(compose_config(*GRAPH_RUN, "device=cuda", "train.compile=true", f"cache_dir={cache_dir}"))
        run.compile_ahead.wait()
        assert len(_debug_get_cache_entry_list(_ce_chunk.__code__)) == 1
        run.train()
    assert len(_debug_get_cache_entry_list(_ce_chunk.__code__)) == 1
    ahead = run.performance_record()["compile"]["ahead"]
    assert list(ahead["seconds"]) == ["triton_driver", "first_graph", "chunked_ce_kernel"]
    # Triton's driver may be loaded already (an earlier test in this process): then it takes no time
    assert ahead["seconds"]["triton_driver"] >= 0
    assert ahead["seconds"]["first_graph"] > 0 and ahead["seconds"]["chunked_ce_kernel"] > 0
    assert not [r for r in caplog.records if "ahead" in r.getMessage()]
    assert run.history and all(h["loss"] is not None for h in run.history)
    torch._dynamo.reset()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Triton's CUDA driver is built for CUDA runs only")
def test_tritons_driver_built_ahead_lands_in_the_sweeps_cache(tmp_path):
    """build_triton_driver, run by CompileAhead, builds Triton's driver module into TRITON_CACHE_DIR
    (the sweep's cache), so the first compile finds it built. A new process: this one's Triton
    driver may already be loaded from another cache."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    code = ("from bench.compiled import CompileAhead, build_triton_driver; a = CompileAhead(); "
            "a.submit('triton_driver', build_triton_driver); a.wait(); print('joined')")
    env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path), "TORCH_WARM_POOL": "0",
           "PYTHONPATH": os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=repo, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "joined" in out.stdout, out.stderr[-3000:]
    assert "failed" not in out.stderr, out.stderr[-3000:]
    assert list(tmp_path.rglob("cuda_utils*.so")), sorted(str(p) for p in tmp_path.rglob("*"))


def test_the_tiny_base_pretraining_does_not_inherit_the_fast_settings():
    """A fresh cache pretrains the tiny base with its own CPU recipe: the run's packed, scaled,
    graphed settings would not pass the config check there (random batches on the CPU)."""
    from bench.config.checks import check
    from bench.run.base_model import pretraining_config
    from conftest import compose_config

    cfg = compose_config(*GRAPH_RUN, "train.pack_tokens=64", "train.lr_scaling=sqrt", "train.compile=true")
    check(cfg)
    pre = pretraining_config(cfg)
    check(pre)
    assert (pre.train.cuda_graphs, pre.train.compile, pre.train.lr_scaling, pre.train.batching) == (False, False, "none", "random")


def test_compiled_layers_give_gradients_to_exactly_the_layers_that_require_them():
    """A block method flips requires_grad on whole layers between steps; each call of the compiled
    layers must give gradients to exactly the layers that require them then. Under dynamo's default
    guards torch 2.11 reused the graph a layer compiled while frozen after it was unfrozen: no
    gradient (docs/perf/compile_guards/starved_blocks.py); compile_decoder_layers turns that off."""
    from bench.compiled import compile_decoder_layers
    from bench.models.loading import decoder_layers

    torch._dynamo.reset()
    model = tiny("llama")
    compile_decoder_layers(model, backend="aot_eager")  # Inductor would need a C++ compiler here
    assert torch._dynamo.config.skip_tensor_guards_with_matching_dict_tags is False
    layers = decoder_layers(model)
    b = batch()
    masks = (b["attention_mask"], torch.ones_like(b["attention_mask"]))  # two graphs: padded and not
    for pattern, mask in [((True, False), 0), ((False, True), 0), ((True, False), 1), ((False, True), 1),
                          ((True, True), 1), ((True, False), 0), ((False, True), 1)]:
        for layer, trains in zip(layers, pattern):
            layer.requires_grad_(trains)
        model.zero_grad(set_to_none=True)
        model(input_ids=b["input_ids"], attention_mask=masks[mask], labels=b["labels"], use_cache=False).loss.backward()
        got = tuple(all(p.grad is not None for p in layer.parameters()) for layer in layers)
        assert got == pattern, (pattern, mask)
    torch._dynamo.reset()


# Knobs that make every method change its trainable set within the 4 steps (a switch at step 2),
# LoRA without dropout (its mask would be drawn differently by a compiled graph), BAdam in fp32
# (the compiled bf16 kernels may round differently: not a deterministic comparison).
COMPILED_METHODS = {
    "topk": ("method.select_every=2",),
    "adagradselect": (),
    "lisa": ("method.interval_steps=2", "method.n_layers=1"),
    "badam": ("method.switch_every=2", "method.precision_scheme=fp32"),
    "lora": ("method.r=4", "method.lora_alpha=8", "method.lora_dropout=0.0"),
    "ist": ("method.update_interval=2", "method.update_fraction=0.5", "method.rollouts=2", "method.lora.r=4", "method.lora.lora_alpha=8", "method.lora.lora_dropout=0.0",
            "method.estimation_batch_size=4"),
}


@pytest.mark.parametrize("method", list(COMPILED_METHODS))
def test_train_compile_trains_every_method_as_eager(method, monkeypatch):
    """train.compile=true on each selection/adapter method: the same losses as eager over 4 steps
    that switch the trainable set (requires_grad flips, hooks, IST's no-grad probes), and the layers
    really ran compiled (dynamo's AOT-autograd backend: Inductor on CPU would need minutes of C++
    compiling; a recompile-limit hit, which would silently run the layers eager, fails the test)."""
    import bench.run.recipe as recipe
    from torch._dynamo.utils import counters

    from bench.compiled import compile_decoder_layers
    from block_harness import tiny_run

    monkeypatch.setattr(recipe, "compile_decoder_layers", lambda model: compile_decoder_layers(model, backend="aot_eager"))
    losses = {}
    # dynamo's own patch, not monkeypatch: the config module's setting is restored, never deleted
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        for compiled in (False, True):
            torch._dynamo.reset()
            counters.clear()
            run = tiny_run(method, *COMPILED_METHODS[method], f"train.compile={str(compiled).lower()}", layers=2,
                           batch_size=4, total_steps=4)
            run.train()
            losses[compiled] = [h["loss"] for h in run.history]
            record = run.performance_record()
            assert record["fast_path"] == {"loss": "none", "compile": compiled, "cuda_graphs": False}
            assert record["compile"]["enabled"] is compiled and record["compile"]["seconds"] >= 0
            assert {"fx_graph_cache_hit", "fx_graph_cache_miss", "aot_autograd_cache_hit"} <= set(record["compile"])
            assert record["device_share"] == {"gpu_uuid": None, "jobs_on_device_max": 1, "launcher_jobs_per_gpu": None,
                                                "mps": False}
    assert counters["stats"]["unique_graphs"] >= 1
    assert losses[True] == pytest.approx(losses[False], rel=1e-5, abs=1e-6)
    torch._dynamo.reset()
