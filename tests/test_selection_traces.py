"""Every block method reports which blocks trained each step (`active_block_ids`), and the run's
records keep that list in metrics.jsonl while W&B gets only the scalars."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from bench.records.recorder import RunRecorder
from block_harness import run_steps, tiny_run


@pytest.mark.parametrize("method", ["topk", "adagradselect", "lisa", "badam", "ist"])
def test_every_block_method_traces_its_active_blocks(method):
    run = tiny_run(method, "method.lora.r=4" if method == "ist" else "train.grad_accum=1")
    run_steps(run, 3)
    for h in run.history:
        assert h["active_block_ids"] == h["active"]  # the blocks that held grads and trained
        assert all(isinstance(i, int) for i in h["active_block_ids"])
        json.dumps(h["active_block_ids"])


def test_list_metrics_reach_metrics_jsonl_but_not_wandb_scalars(tmp_path):
    wandb_cfg = OmegaConf.create({"mode": "offline", "project": "slmbench-test", "entity": None, "group": None})
    recorder = RunRecorder(tmp_path, {"seed": 0}, wandb_cfg, {"method": "topk", "model": "m", "task": "t"})
    logged = []
    real_log = recorder.wandb_run.log

    def spy(data, step=None):  # the real offline run still receives the call
        logged.append(dict(data))
        return real_log(data, step=step)
    recorder.wandb_run.log = spy
    recorder.log_step(1, {"loss": 1.5, "active_blocks": 2, "active_block_ids": [0, 3], "grad_norm": None})
    recorder.close()
    (line,) = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(line) == {"step": 1, "loss": 1.5, "active_blocks": 2, "active_block_ids": [0, 3],
                                "grad_norm": None}
    assert logged == [{"train/loss": 1.5, "train/active_blocks": 2}]
    assert list((tmp_path / "wandb").glob("offline-run-*/*.wandb"))
