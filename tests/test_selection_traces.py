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


def test_every_step_has_a_row_under_log_every_with_adagradselects_selection(tmp_path, cache_dir):
    """train.log_every=3 through the real entry: metrics.jsonl holds one row per optimizer step;
    the loss and grad_norm are null where they were not read; every row has the active blocks, the
    explore flag and epsilon, explore rows one gradient norm per block; the final loss is the last read."""
    from bench.cli import run_job
    from conftest import compose_config
    cfg = compose_config("method=adagradselect", f"cache_dir={cache_dir}", "wandb.mode=disabled", "seed=0",
                         "train.max_steps=7", "eval.limit=1", "train.log_every=3", "method.epsilon0=0.5",
                         "method.epsilon_decay=0.0")
    record = run_job(cfg, tmp_path / "run", {"method": "adagradselect", "model": "tiny-llama", "task": "arithmetic"}, None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 8))
    assert [r["step"] for r in rows if r["loss"] is not None] == [3, 6, 7]
    assert all(r["grad_norm"] is None for r in rows if r["loss"] is None)
    assert record["metrics"]["final_train_loss"] == rows[-1]["loss"]
    assert record["steps_per_epoch"] > 7
    assert all(len(r["active_block_ids"]) == r["active_blocks"] == 1 and r["epsilon"] == 0.5 for r in rows)
    explored = [r for r in rows if r["explore"]]
    assert 0 < len(explored) < 7  # both kinds of step (seeded)
    for r in rows:
        norms = r.get("block_grad_norms")
        assert (norms is not None) == bool(r["explore"])
        if norms is not None:  # 4 decoder layers; the explore step trained the largest-norm block
            assert len(norms) == 4 and r["active_block_ids"] == [max(range(4), key=norms.__getitem__)]
