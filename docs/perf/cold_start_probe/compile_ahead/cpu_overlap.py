"""Does a compile in a thread overlap a run's set-up? The CPU stand-in for CompileAhead (bench/compiled.py).

One process per call, empty Inductor caches of its own. It builds the SmolLM2-135M-Instruct run (the GGUF
converted beforehand under CACHE) on the CPU step by step, as Run.setup does, and then compiles a first graph
(bench/compiled.py compile_first_graph, the graph CompileAhead compiles first on CUDA) the way the first step
would meet it. Variant `ahead` submits that graph to a CompileAhead right after the method is known, as a CUDA
run does, and waits for it where the first step would; variant `inline` compiles it after the set-up. On the
CPU the graph's kernels are C++ built by the compiler in child processes, where on CUDA they are Triton's.

    python docs/perf/cold_start_probe/compile_ahead/cpu_overlap.py {ahead,inline} DATA_DIR CACHE
"""
import json
import os
import sys
import tempfile
import time

os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ind_")
start = time.perf_counter()
import torch  # noqa: E402

from bench.compiled import CompileAhead, compile_first_graph  # noqa: E402
from bench.run.recipe import Run  # noqa: E402
from lab.workload import compose  # noqa: E402

variant, data, cache = sys.argv[1:4]
imports_s = time.perf_counter() - start
cfg = compose(["model=smollm2-135m", "task=gsm8k", f"task.train.path={data}/gsm8k/train.jsonl",
               f"task.eval.gsm8k_test.path={data}/gsm8k/test.jsonl", "method=full", "train.epochs=1",
               "train.max_steps=null", "train.batching=packed", "train.pack_tokens=16384",
               "train.fast_path=chunked_ce", "train.compile=true", "device=cpu", "wandb.mode=disabled",
               f"cache_dir={cache}"])
start = time.perf_counter()
run = Run(cfg)
run.setup_task_and_method()
ahead = CompileAhead()
if variant == "ahead":
    ahead.submit("first_graph", lambda: compile_first_graph(run.device))
steps = {}
for step in ("setup_model", "setup_data", "prepare_method", "setup_optimizer"):
    t = time.perf_counter()
    getattr(run, step)()
    steps[step] = round(time.perf_counter() - t, 2)
setup_s = time.perf_counter() - start
t = time.perf_counter()
ahead.wait()
if variant == "inline":
    compile_first_graph(run.device)
first_graph_after_setup_s = time.perf_counter() - t
print(json.dumps({"variant": variant, "imports_s": round(imports_s, 2), "setup_s": round(setup_s, 2), "steps": steps,
                  "first_graph_after_setup_s": round(first_graph_after_setup_s, 2),
                  "setup_and_first_graph_s": round(setup_s + first_graph_after_setup_s, 2),
                  "ahead": ahead.record()}))
