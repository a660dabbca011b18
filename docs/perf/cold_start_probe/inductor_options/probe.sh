# The Inductor-options probe behind docs/performance-analysis.md "The cold epoch, compiled with less"
# (an experiment kept for the record, not part of the benchmark). Run once, on one H100 machine, from the
# repository root at commit 3303839, with coldrun.py (beside this file) in .devdata/gpu/ and an ignored
# .devdata holding GSM8K (gsm8k/), Llama-3.2-1B's tokenizer and config (llama32/, from ../shared/data/models)
# and .devdata/gpu/env.sh (installs the carried wheels, sets DATA to the GSM8K paths):
#   bash .devdata/gpu/probe.sh 'v base1 b1' 'stub s1' 'v stub s1' 'v base2 b2' 'v warm b1' \
#     "INDUCTOR_PATCH='{\"triton.autotune_pointwise\": false}' v atpw a1" "INDUCTOR_PATCH='{\"pattern_matcher\": false}' v nopm n1"
# Each variant is one `slmbench` run in a new process: SmolLM2-135M's layer shape with random weights
# (tiny-llama3.2 at SmolLM2's dims; Llama-3.2's 128k vocabulary for the head), full fine-tuning, one epoch of GSM8K
# at the sweep's fast settings, cache_dir cache_<name>: empty unless named again (warm reuses base1's).
# stub: Triton's driver module built into the cache first. atpw, nopm: Inductor's config patched in the process
# (coldrun.py INDUCTOR_PATCH). summary.txt holds what it printed.
source .devdata/gpu/env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; nproc; lscpu | grep -E "Model name|MHz" | head -3
W=outputs/probe; rm -rf $W; mkdir -p $W
DIMS='model.dims={hidden_size:576,intermediate_size:1536,num_hidden_layers:30,num_attention_heads:9,num_key_value_heads:3,head_dim:64}'
COMMON="model=tiny-llama3.2 model.path=$PWD/.devdata/llama32 $DIMS task=gsm8k $DATA method=full train.epochs=1 train.max_steps=null
 train.batch_size=16 train.lr=1e-5 seed=0 train.batching=packed train.pack_tokens=16384 train.lr_scaling=sqrt train.fast_path=chunked_ce
 train.compile=true train.cuda_graphs=auto train.log_every=10 eval.engine=static eval.batch_size=512 eval.limit=32 wandb.mode=disabled"
v() {  # name cache extra...
  local name=$1 cache=$2; shift 2
  local t0=$(date +%s.%N)
  timeout 150 python3 .devdata/gpu/coldrun.py $COMMON cache_dir=$W/cache_$cache store_dir=$W/store_$name hydra.run.dir=$W/run_$name "$@" > $W/$name.log 2>&1
  local rc=$?
  python3 - $W/run_$name $name $rc $t0 <<'PY'
import json, sys, time, pathlib
d, name, rc, t0 = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
try:
    r = json.loads((d / "result.json").read_text()); m = r["metrics"]
    steps = [(x["step"], round(x["step_s"], 3)) for x in map(json.loads, open(d / "metrics.jsonl")) if "step_s" in x]
    c = r["compile"]
    print(f"== {name} rc={rc} wall={time.time()-t0:.1f} train_s={m['train_wall_clock_s']:.2f} median_step={m['median_step_s']:.4f} "
          f"loss={m['final_train_loss']:.4f} compile_s={c['seconds']} fx_hit={c['fx_graph_cache_hit']} fx_miss={c['fx_graph_cache_miss']} graphs={r['fast_path']}")
    print("   steps", steps[:3], steps[-1])
except Exception as e:
    print(f"== {name} rc={rc} no record: {e}")
PY
  grep -E "^PHASES|^COUNTERS|Error" $W/$name.log | cut -c1-1800 | head -4
}
stub() {  # build Triton's driver module into a cache, timed
  local t0=$(date +%s.%N)
  TRITON_CACHE_DIR=$W/cache_$1/triton python3 -c "import triton; from triton.runtime.driver import driver; driver.active.utils" 2>&1 | tail -2
  echo "stub $1: $(python3 -c "import time;print(round(time.time()-$t0,2))") s; $(find $W/cache_$1/triton -name '*.so' | wc -l) .so"
}
for spec in "$@"; do eval "$spec"; done
tar czf $OUT/probe.tgz $W/*.log $W/run_*/result.json $W/run_*/metrics.jsonl 2>/dev/null
