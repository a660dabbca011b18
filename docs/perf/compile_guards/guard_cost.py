"""What checking every parameter's guards costs a compiled layer call on the host: one tiny Llama
decoder layer compiled with dynamo's eager backend (so the guards are the only difference), 2,000
no-grad calls, best of 5, one thread. Run once per variant, each in its own process:

    python docs/perf/compile_guards/guard_cost.py skip     # dynamo's default
    python docs/perf/compile_guards/guard_cost.py guards   # bench/compiled.py compile_decoder_layers' setting
"""
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this tree's bench, not an installed copy
from bench.models.loading import decoder_layers  # noqa: E402
from test_fast_path import tiny  # noqa: E402

torch._dynamo.config.skip_tensor_guards_with_matching_dict_tags = sys.argv[1] == "skip"
torch.set_num_threads(1)
layer = decoder_layers(tiny("llama"))[0]
layer.compile(backend="eager")
hidden = torch.randn(1, 4, 64)
kwargs = dict(attention_mask=None, position_ids=torch.arange(4)[None], use_cache=False,
              position_embeddings=(torch.ones(1, 4, 16), torch.zeros(1, 4, 16)))
with torch.no_grad():
    for _ in range(20):
        layer(hidden, **kwargs)
    per_call_us = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(2000):
            layer(hidden, **kwargs)
        per_call_us.append((time.perf_counter() - start) / 2000 * 1e6)
print(f"{sys.argv[1]}: {min(per_call_us):.1f} us a call (best of 5; all {[round(t, 1) for t in per_call_us]})")
