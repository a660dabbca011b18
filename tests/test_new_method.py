"""A new method is one file + one yaml: added in a temp dir, run through slmbench with no other edit."""
from __future__ import annotations

import json
import textwrap

from conftest import REPO, run_cli

METHOD_PY = '''
"""Round-robin: block step % n trains (a toy selection method built on methods/blocks.py)."""
from methods.blocks import BlockSelectionMethod


class RoundRobin(BlockSelectionMethod):
    def __init__(self, policy: str):
        super().__init__(policy, non_layer={"norm": "always"})

    def choose(self, step):
        return [step % self.n_blocks]
'''

METHOD_YAML = '''
# A plugin method: one file on PYTHONPATH, one yaml on the Hydra search path.
_target_: roundrobin_method.RoundRobin
policy: offload   # our choice, not from a paper
'''


def test_a_method_in_a_temp_dir_runs_through_slmbench(tmp_path):
    (tmp_path / "plugin" / "conf" / "method").mkdir(parents=True)
    (tmp_path / "plugin" / "roundrobin_method.py").write_text(textwrap.dedent(METHOD_PY))
    (tmp_path / "plugin" / "conf" / "method" / "roundrobin.yaml").write_text(METHOD_YAML)
    run_cli(tmp_path, "method=roundrobin", f"hydra.searchpath=[file://{tmp_path / 'plugin' / 'conf'}]",
            "model.base=null", "train.max_steps=5", "train.batch_size=8", "eval.limit=8", "wandb.mode=disabled",
            env={"PYTHONPATH": f"{REPO}:{tmp_path / 'plugin'}"})
    (result_file,) = tmp_path.glob("outputs/runs/*/*/result.json")
    result = json.loads(result_file.read_text())
    assert result["status"] == "ok" and result["method"] == "roundrobin"
    rows = [json.loads(line) for line in (result_file.parent / "metrics.jsonl").read_text().splitlines()]
    assert [r["active_blocks"] for r in rows] == [1] * 5
