# The side-by-side cold-epoch probe behind docs/performance-analysis.md "The cold epoch: the options side by side"
# (an experiment kept for the record, not part of the benchmark). Run once, on one H100 80GB machine, from the
# repository root at commit fcb095d, as `bash abba.sh A A C S S C A A C S E` from .devdata/gpu/ with abba_child.py
# beside it, and an ignored .devdata holding GSM8K (gsm8k/), Llama-3.2-1B's tokenizer and config (llama32/, from
# ../shared/data/models), 1047af5's bench/ conf/ methods/ hydra_plugins/ analysis/ (opt/: `git archive 1047af5 ...`)
# and .devdata/gpu/env.sh (installs the carried wheels). Each argument is one new process with empty Inductor and
# Triton caches of its own, in the order given:
#   A: this tree (no Inductor options);
#   C: 1047af5's tree (triton.autotune_pointwise=false and pattern_matcher=false, Triton's driver built in a thread);
#   S: 1047af5's tree without pattern_matcher=false (NO_PM=1);
#   E: this tree with train.compile=false (the decoder replayed as CUDA graphs of its plain layers).
# summary.txt holds what it printed.
source .devdata/gpu/env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; nproc; lscpu | grep -E "Model name" | head -1
export DD=$PWD/.devdata
W=/tmp/abba; rm -rf $W; mkdir -p $W
i=0
for v in "$@"; do
  i=$((i+1)); name=${i}_$v
  case $v in A) PP=$PWD; NP=0;; C) PP=$PWD/.devdata/opt:$PWD; NP=0;; S) PP=$PWD/.devdata/opt:$PWD; NP=1;; E) PP=$PWD; NP=0;; esac
  EX='[]'; [ $v = E ] && EX='["train.compile=false"]'
  t0=$(date +%s.%N)
  env -u TORCHINDUCTOR_CACHE_DIR -u TRITON_CACHE_DIR PYTHONPATH=/tmp/site:$PP NO_PM=$NP EXTRA="$EX" timeout 120 python3 .devdata/gpu/abba_child.py $W/$name.json $W/cache_$name > $W/$name.log 2>&1
  echo "== $name rc=$? wall=$(python3 -c "import time;print(round(time.time()-$t0,1))") $(tail -1 $W/$name.log | cut -c1-400)"
done
mkdir -p $OUT/abba && cp $W/*.json $OUT/abba/ && for f in $W/*.log; do grep -v "it/s\]" $f | tail -15 > $OUT/abba/$(basename $f); done
