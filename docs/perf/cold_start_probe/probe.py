# The cold-start probe behind docs/performance-analysis.md "fourth run" (an experiment kept for
# the record, not part of the benchmark). Each variant ran in a new process, one after the other on
# one H200 (torch 2.11), its own empty TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR, in this order:
#   for v in old base eager_ce norm_mlp; do
#     TORCHINDUCTOR_CACHE_DIR=/tmp/ind_$v TRITON_CACHE_DIR=/tmp/tri_$v python docs/perf/cold_start_probe/probe.py $v
#   done
# (from the repository root at git tree 0c8e8e65 = commit 0b7c10c, with `.devdata` a copy of
# ../shared/data's gsm8k and models folders). It builds harness_fast's run (bench/perf/real_workload.py
# FAST_SETTINGS) and trains its epoch: host seconds per step (no sync), the collector's full passes,
# torch.compile's phases and counters, the decoder graphs' capture seconds. summary.txt holds
# what the four processes printed. It imports bench.perf, which lab/ has since replaced, and patches
# names of that tree: run it from a checkout of that commit (`git worktree add /tmp/probe 0b7c10c`).
# Variants:
#   old       the code before 0b7c10c: no compile workers started at setup, nothing frozen after step 1
#   base      the code as committed
#   eager_ce  base, the chunked loss's kernel left eager (not compiled)
#   norm_mlp  base, the MLP and the two RMSNorms of each layer compiled instead of the whole layer
import os, sys, time, json
t_proc = time.perf_counter()
variant = sys.argv[1]
import torch
from bench.perf import real_workload as rw
from bench.perf.loops import compile_seconds
args = rw.parse_args(["--data-dir", os.environ.get("DATA", ".devdata"), "--out", "/tmp/unused.json", *os.environ.get("PROBE_ARGS", "").split()])
fast, _ = rw.on_device(args.fast_set, rw.run_device(args))
if "eager_ce" in variant:
    import bench.loss as L
    L._compiled_ce_chunk = lambda: L._ce_chunk
if variant == "old":  # as at 25ae6ca: no workers started at setup, nothing frozen after the first step
    import bench.run.recipe as R
    R.start_compile_workers = lambda *args: None
    class _NoFreeze:
        def step_start(self, step): pass
        def step_end(self, step, metrics): pass
    R.FreezeAfterFirstStep = _NoFreeze
if variant == "norm_mlp":
    import bench.run.recipe as R
    from bench.models.loading import decoder_layers
    def compile_parts(model, backend="inductor"):
        for layer in decoder_layers(model):
            for part in (layer.mlp, layer.input_layernorm, layer.post_attention_layernorm):
                part.compile(backend=backend)
    R.compile_decoder_layers = compile_parts
extra = [s for s in fast if not (variant.startswith("nocompile") and s.startswith("train.compile"))]
cfg, overrides = rw.config(args, extra=[*extra, *rw.evaluation_overrides(args)])
t0 = time.perf_counter()
run = rw.Run.build(cfg)
t_build = time.perf_counter() - t0
class Host:
    def __init__(s): s.t = {}; s.ends = []
    def step_start(s, step): s.t0 = time.perf_counter()
    def step_end(s, step, m):
        s.ends.append(round(time.perf_counter() - s.t0, 3))

h = Host()
import gc
gc_log = []
def _cb(phase, info, _t=[0.0]):
    if phase == "start": _t[0] = time.perf_counter()
    elif info["generation"] == 2: gc_log.append((len(h.ends), round(time.perf_counter() - _t[0], 3), info["collected"]))
gc.callbacks.append(_cb)
t0 = time.perf_counter()
run.train(observers=[h])
torch.cuda.synchronize() if torch.cuda.is_available() else None
t_train = time.perf_counter() - t0
from torch._dynamo.utils import compile_times, counters
g = getattr(run.state, "decoder_graph", None)
print(f"VARIANT {variant}: import {t0 - t_proc - t_build:.1f} build {t_build:.1f} train {t_train:.2f} epoch_s {sum(run.timer.step_seconds):.2f} "
      f"first10 {sum(run.timer.step_seconds[:10]):.2f} capture {g.capture_seconds if g else None}", flush=True)
print("HOST", h.ends)
print("GC2 (step, s, collected)", gc_log, "frozen", gc.get_freeze_count())
print("WINDOWS", [round(x, 4) for x in run.timer.step_seconds[::10]])
print("PHASES", json.dumps({k: round(v, 2) for k, v in compile_seconds().items() if v >= 0.05}))
print("COUNTERS", json.dumps({k: dict(v) for k, v in counters.items() if k in ("stats", "inductor", "aot_autograd", "recompiles")})[:1500])
