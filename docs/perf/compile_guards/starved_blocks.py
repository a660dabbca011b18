"""Do compiled decoder layers give every trained block its gradient? For each block method at its
default settings, a tiny run (4 Llama layers unless told, CPU, dynamo's aot_eager backend as in
tests/test_fast_path.py) trains eager and with train.compile=true; at every optimizer step it counts
the blocks that require grad but got none ("starved"), and it prints the losses' largest relative
difference. Run with the torch under test:

    python docs/perf/compile_guards/starved_blocks.py [STEPS] [layers=N] [guards] [METHOD ...]

`guards` turns on what bench/compiled.py compile_decoder_layers now sets (dynamo checks every
parameter's tensor guards); without it, dynamo's default."""
import sys
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this tree's bench, not an installed copy
import bench.compiled as compiled_module  # noqa: E402
import bench.run.recipe as recipe  # noqa: E402
from block_harness import tiny_run  # noqa: E402

steps = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 120
layers = int(next((a.split("=")[1] for a in sys.argv if a.startswith("layers=")), 4))


def compile_layers(model):
    compiled_module.compile_decoder_layers(model, backend="aot_eager")
    if "guards" not in sys.argv:  # dynamo's default, what the harness had before
        torch._dynamo.config.skip_tensor_guards_with_matching_dict_tags = True


recipe.compile_decoder_layers = compile_layers
current = {}
METHODS = ("topk", "adagradselect", "lisa", "badam")


def count_starved(optimizer, args, kwargs):
    blocks = current["run"].method.layout.blocks
    trained = [b for b in blocks if all(p.requires_grad for p in b.params)]
    current["trained"] += len(trained)
    current["starved"] += sum(all(p.grad is None for p in b.params) for b in trained)


register_optimizer_step_pre_hook(count_starved)
print(f"torch {torch.__version__}, {steps} steps, {layers} layers, "
      f"skip_tensor_guards_with_matching_dict_tags={'off (guards)' if 'guards' in sys.argv else 'default'}")
for method in [a for a in sys.argv[1:] if a in METHODS] or METHODS:
    losses = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        run = tiny_run(method, f"train.compile={str(compiled).lower()}", layers=layers, batch_size=4, total_steps=steps)
        current.update(run=run, trained=0, starved=0)
        run.train()
        losses[compiled] = [h["loss"] for h in run.history]
        print(f"{method:14s} compiled={compiled!s:5s} block-steps trained {current['trained']:4d}, "
              f"starved {current['starved']:4d}")
    diff = max(abs(a - b) / abs(b) for a, b in zip(losses[True], losses[False]))
    print(f"{method:14s} largest relative loss difference, compiled vs eager: {diff:.2e}")
