#!/bin/sh
# Rebuild docs/performance.md, docs/perf/loss_curves.png and docs/performance-memory.md from the
# device runs' JSON (run from the repository root). Each JSON records the command that wrote it
# (`python -m lab shapes ... --out FILE`, `python -m lab real_workload ... --out FILE` or
# `python -m lab memory ... --out FILE`; tests/test_lab_commands.py parses every one of them).
set -e
# The reference workload's section (python -m lab real_workload), once a device run wrote it.
REAL_WORKLOAD=""
[ -f docs/perf/real_workload.json ] && REAL_WORKLOAD="--real-workload docs/perf/real_workload.json"
# The sweep throughput section (python -m lab sweep_throughput), once a device run wrote it.
SWEEP=""
[ -f docs/perf/sweep_throughput.json ] && SWEEP="--sweep-throughput docs/perf/sweep_throughput.json"
python -m lab report \
  docs/perf/perf_llama3.2-1b.json docs/perf/perf_qwen2.5-0.5b.json docs/perf/perf_phi4-mini.json \
  docs/perf/perf_blocks_phi4-mini.json docs/perf/perf_policy_qwen2.5-0.5b.json docs/perf/perf_fast_llama3.2-1b.json \
  docs/perf/perf_eval.json docs/perf/perf_eval_agreement.json docs/perf/profile_blocks_qwen2.5-0.5b.json \
  $REAL_WORKLOAD $SWEEP --out docs/performance.md
[ -f docs/perf/real_workload.json ] && python -m lab loss_curves docs/perf/real_workload.json --out docs/perf/loss_curves.png
python -m lab memory --render docs/perf/memory.json --md docs/performance-memory.md
