#!/bin/sh
# Rebuild docs/performance.md and docs/performance-memory.md from the device runs' JSON (run from
# the repository root). Each JSON records the exact command that wrote it (`python -m bench.perf.lab
# ... --out FILE` or `python -m bench.perf.memory ... --out FILE`, one H100, 2026-11-23).
set -e
# The reference workload's section (python -m bench.perf.real_workload), once a device run wrote it.
REAL_WORKLOAD=""
[ -f docs/perf/real_workload.json ] && REAL_WORKLOAD="--real-workload docs/perf/real_workload.json"
python -m bench.perf.report \
  docs/perf/perf_llama3.2-1b.json docs/perf/perf_qwen2.5-0.5b.json docs/perf/perf_phi4-mini.json \
  docs/perf/perf_blocks_phi4-mini.json docs/perf/perf_policy_qwen2.5-0.5b.json docs/perf/perf_fast_llama3.2-1b.json \
  docs/perf/perf_eval.json docs/perf/perf_eval_agreement.json docs/perf/profile_blocks_qwen2.5-0.5b.json \
  $REAL_WORKLOAD --out docs/performance.md
[ -f docs/perf/real_workload.json ] && python -m bench.perf.loss_curves docs/perf/real_workload.json --out docs/perf/loss_curves.png
python -m bench.perf.memory --render docs/perf/memory.json --md docs/performance-memory.md
