# One process of abba.sh (beside this file): see its header.
import json, os, sys, time
t_start = time.perf_counter()
out, cache = sys.argv[1], sys.argv[2]
import torch
import bench.runtime as rt
if os.environ.get("NO_PM") == "1":
    rt.INDUCTOR_OPTIONS.pop("pattern_matcher")
from lab.workload import compose
from bench.run.recipe import Run
D = os.environ["DD"]
dims = "model.dims={hidden_size:576,intermediate_size:1536,num_hidden_layers:30,num_attention_heads:9,num_key_value_heads:3,head_dim:64}"
ov = ["model=tiny-llama3.2", f"model.path={D}/llama32", dims, "task=gsm8k", f"task.train.path={D}/gsm8k/train.jsonl",
      f"task.eval.gsm8k_test.path={D}/gsm8k/test.jsonl", "method=full", "train.epochs=1", "train.max_steps=null",
      "train.batch_size=16", "train.lr=1e-5", "seed=0", "train.batching=packed", "train.pack_tokens=16384",
      "train.lr_scaling=sqrt", "train.fast_path=chunked_ce", "train.compile=true", "train.cuda_graphs=auto",
      "train.log_every=10", "wandb.mode=disabled", f"cache_dir={cache}"]
cfg = compose(ov + json.loads(os.environ.get("EXTRA", "[]")))
t_imports = time.perf_counter() - t_start
s = time.perf_counter(); run = Run.build(cfg); build_s = time.perf_counter() - s
s = time.perf_counter(); run.train(); train_wall = time.perf_counter() - s
from torch._dynamo.utils import compilation_time_metrics as ctm, counters
phases = {k: round(sum(v), 3) for k, v in ctm.items()}
sec = run.timer.step_seconds
rec = {"options": getattr(rt, "INDUCTOR_OPTIONS", None), "bench": rt.__file__, "imports_s": round(t_imports, 2),
       "build_s": round(build_s, 2), "train_wall_s": round(train_wall, 2), "epoch_s": round(sum(sec), 3),
       "first10_s": round(sum(sec[:10]), 3), "median_step_s": round(sorted(sec[10:])[len(sec[10:]) // 2], 4),
       "steps": len(sec), "compile_s": run.compiles.summary()["seconds"],
       "capture_s": run.state.decoder_graph and round(run.state.decoder_graph.capture_seconds, 3), "final_loss": run.final_loss,
       "phases": dict(sorted(phases.items(), key=lambda kv: -kv[1])[:45]),
       "counters": {k: dict(v) for k, v in counters.items() if k in ("inductor", "aot_autograd")}}
open(out, "w").write(json.dumps(rec, indent=1))
print(json.dumps({k: rec[k] for k in ("options", "imports_s", "build_s", "epoch_s", "first10_s", "median_step_s", "compile_s", "capture_s", "final_loss")}))
os._exit(0)
