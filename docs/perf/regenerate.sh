#!/bin/sh
# Rebuild docs/performance.md from the device runs' JSON (run from the repository root).
# The JSON files come from `python -m bench.perf ... --out FILE` on the device (commands inside).
exec python -m bench.perf_report \
  docs/perf/perf_llama3.2-1b.json docs/perf/perf_qwen2.5-0.5b.json docs/perf/perf_phi4-mini.json \
  docs/perf/perf_ist_llama3.2-1b.json docs/perf/perf_ist_qwen2.5-0.5b.json docs/perf/perf_ist_phi4-mini.json \
  docs/perf/run2_eval_static.json docs/perf/run2_eval_agreement.json docs/perf/run1_eval_hf_static_failed.json \
  docs/perf/run1_train_qwen_phi.json docs/perf/run1_train_llama_compile.json docs/perf/run2_train_repeats_profile.json \
  --out docs/performance.md
