"""A new method is one file + one yaml, with no other edit: as a plugin in a temp dir, run through
slmbench; and as `methods/foo.py` + `conf/method/foo.yaml` in a copy of the product, run by
`slmbench -m method=foo` and shown by the report (`slmbench-report`): no method list to extend."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

from conftest import REPO, result_files, run_cli

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


PRODUCT = ("bench", "methods", "analysis", "conf", "hydra_plugins")
FOO = '''"""Norm-only fine-tuning: only the normalization weights train."""
import torch

from methods.base import Method


class NormsOnly(Method):
    def prepare(self, model: torch.nn.Module, ctx) -> torch.nn.Module:
        for name, param in model.named_parameters():
            param.requires_grad_("norm" in name)
        return super().prepare(model, ctx)
'''
FOO_YAML = "# Norm-only fine-tuning (methods/foo.py).\n_target_: methods.foo.NormsOnly\n"


def run_in(copy, module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` in the copy, importing the copy's code only."""
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=copy, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(copy)}, timeout=600)
    assert proc.returncode == 0, f"{module} {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_a_new_method_file_and_yaml_run_in_the_sweep_and_show_in_the_report(tmp_path, cache_dir):
    copy = tmp_path / "repo"
    for name in PRODUCT:
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    assert not (copy / "methods" / "foo.py").exists() and not (copy / "conf" / "method" / "foo.yaml").exists()
    (copy / "methods" / "foo.py").write_text(FOO)
    (copy / "conf" / "method" / "foo.yaml").write_text(FOO_YAML)

    sweep = run_in(copy, "bench.cli", "-m", "method=foo", "seed=0", "train.max_steps=2", "eval.limit=4",
                   "hydra.sweep.dir=sweep", f"cache_dir={cache_dir}", "wandb.mode=disabled", "device=cpu")
    (record_path,) = result_files(copy / "sweep")
    record = json.loads(record_path.read_text())
    assert record["status"] == "ok" and record["method"] == "foo", record.get("status")
    assert "| foo | tiny-llama |" in sweep.stdout  # the sweep-end table has its row

    report = run_in(copy, "analysis.report", "sweep", "--no-plots")
    assert "| foo |" in report.stdout
    assert "| foo |" in (copy / "sweep" / "report" / "accuracy.md").read_text()
