"""The comparison protocol (bench/protocol.py) and the validation split it chooses lr on
(bench/tasks/validation.py): the split is held out and never trained on, the choosing rule, the real
experiment's two stages, and both stages of the tiny protocol run for real as Hydra multiruns."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from bench.config.checks import check
from bench.errors import ConfigError
from bench.protocol import best_lr, protocol_lr, selection_records, selection_table
from bench.run.recipe import Run
from conftest import CONF, REPO, SHARED_DATA, compose_config, result_files, run_cli
from tests.task_helpers import GSM8K_LOCAL, build_task


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


# -- the validation split -------------------------------------------------------------------------

def test_the_run_never_trains_on_its_validation_split(cache_dir):
    cfg = compose_config("task.validation_size=50", "task.validation_seed=3", "eval.split=validation",
                         f"cache_dir={cache_dir}", "wandb.mode=disabled")
    run = Run.build(cfg)
    trained = {ex.id for ex in run.task.train_examples()}
    held_out = {ex.id for ex in run.task.validation_examples()}
    tested = {ex.id for exs in run.task.eval_sets().values() for ex in exs}
    assert len(held_out) == 50 and not trained & held_out and not tested & held_out
    # What the run tokenized for training is exactly the training part: 720 pairs less the 50 held out.
    assert len(run.examples) == len(trained) == 720 - 50
    assert run.facts["eval_split"] == "validation"
    assert run.facts["validation"]["size"] == 50 and run.facts["validation"]["seed"] == 3
    # The seed draws the split; the hash names it.
    other = instantiate(compose_config("task.validation_size=50", "task.validation_seed=4").task)
    assert other.validation_record()["sha256"] != run.facts["validation"]["sha256"]
    again = instantiate(compose_config("task.validation_size=50", "task.validation_seed=3").task)
    assert again.validation_record() == run.facts["validation"]


def test_no_split_by_default_and_validation_needs_one():
    cfg = compose_config()
    assert cfg.eval.split == "test" and cfg.task.validation_size == 0
    assert instantiate(cfg.task).validation_record() == {"size": 0, "seed": 0, "sha256": None}
    with pytest.raises(ConfigError, match=r"eval.split=validation needs task.validation_size"):
        check(compose_config("eval.split=validation"))
    with pytest.raises(ConfigError, match=r"eval.split='dev'; allowed: test, validation"):
        check(compose_config("eval.split=dev"))
    with pytest.raises(ConfigError, match=r"task.validation_size must be an integer >= 0"):
        check(compose_config("task.validation_size=-1"))
    with pytest.raises(ConfigError, match=r"protocol.stage=selection .* needs eval.split=validation"):
        check(compose_config("protocol.stage=selection", "task.validation_size=10"))
    with pytest.raises(ConfigError, match=r"task.validation_size=720 must be smaller than the 720"):
        build_task("arithmetic", "task.validation_size=720")


def test_the_base_pretraining_of_a_protocol_run_is_no_protocol_run():
    from bench.run.base_model import pretraining_config

    pre = pretraining_config(compose_config("+experiment=protocol_tiny", "method=full"))
    check(pre)  # the selection stage's validation split is not the pretraining task's
    assert pre.eval.split == "test" and pre.protocol.stage is None and pre.task.validation_size == 0


def test_validation_without_a_split_exits_2_naming_the_key(tmp_path):
    proc = run_cli(tmp_path, "eval.split=validation", "wandb.mode=disabled", check=False)
    assert proc.returncode == 2
    assert "task.validation_size" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.assets("gsm8k/train.jsonl", "gsm8k/test.jsonl")
def test_gsm8k_holds_out_500_scored_like_its_test_set():
    cfg = compose_config("task=gsm8k", f"task.train.path={SHARED_DATA}/gsm8k/train.jsonl",
                         f"task.eval.gsm8k_test.path={SHARED_DATA}/gsm8k/test.jsonl", "task.validation_size=500")
    task = instantiate(cfg.task)
    validation = task.validation_examples()
    assert len(validation) == 500 and len(task.train_examples()) == 7473 - 500
    assert not {ex.id for ex in validation} & {ex.id for ex in task.train_examples()}
    verdict = task.score(f"so the answer is {validation[0].gold}", validation[0])
    assert verdict["accuracy"] is verdict["flexible"] is True
    assert list(task.scored_sets("validation")) == ["validation"]
    assert list(task.scored_sets("test")) == ["gsm8k_test"]


# -- the choosing rule ------------------------------------------------------------------------------

def selection_record(method: str, lr: float, accuracy: float, status: str = "ok", split: str = "validation",
                     finished_at: float = 1.0) -> dict:
    return {"status": status, "method": method, "eval_split": split, "finished_at": finished_at,
            "metrics": {"accuracy": accuracy}, "config": {"train": {"lr": lr}, "protocol": {"stage": "selection"}}}


def test_best_lr_highest_validation_accuracy_tie_to_the_smaller_lr():
    records = [selection_record("full", 1e-5, 0.30), selection_record("full", 3e-5, 0.40),
               selection_record("full", 1e-4, 0.40), selection_record("lora", 1e-4, 0.2),
               selection_record("lora", 3e-4, 0.9, status="failed"), selection_record("lora", 1e-3, 0.9, split="test")]
    assert best_lr(records, "full") == 3e-5   # 3e-5 and 1e-4 tie: the smaller
    assert best_lr(records, "lora") == 1e-4   # a failed run and a test-scored run never count
    with pytest.raises(ConfigError, match=r"no `ok` selection run of method 'ist'.*in the records"):
        best_lr(records, "ist")
    # A repeated (method, lr) counts once, the newest.
    rerun = [*records, selection_record("full", 1e-5, 0.5, finished_at=2.0)]
    assert best_lr(rerun, "full") == 1e-5
    assert [r["lr"] for r in selection_table(rerun) if r["method"] == "full"] == [1e-5, 3e-5, 1e-4]


def write_selection(root: Path, records: list[dict]) -> Path:
    for i, record in enumerate(records):
        (root / f"{i}-{record['method']}").mkdir(parents=True)
        (root / f"{i}-{record['method']}" / "result.json").write_text(json.dumps(record))
    return root


def test_smollm2_gsm8k_stages(tmp_path):
    selection = composed("+experiment=smollm2_gsm8k", "method=topk", "protocol.lr_index=2")
    params = selection.hydra.sweeper.params
    methods = params.method.split(",")
    assert set(methods) == {"full", "lora", "topk", "adagradselect", "ist", "lisa", "badam"}
    assert params.seed == "0" and params["protocol.lr_index"] == "0,1,2"
    assert selection.eval.split == "validation" and selection.task.validation_size == 500
    assert selection.train.epochs == 3 and selection.model.name == "smollm2-135m" and selection.task.name == "gsm8k"
    for method in methods:  # every trained method has a grid of >= 3 points, one per swept index
        assert len(selection.protocol.lr_grid[method]) >= 3
    assert protocol_lr("topk", _root_=selection) == selection.protocol.lr_grid.topk[2]
    assert not selection.train.cuda_graphs  # the block methods refuse CUDA graphs

    chosen = write_selection(tmp_path / "sel", [selection_record("topk", 1e-5, 0.1), selection_record("topk", 1e-4, 0.2)])
    final = composed("+experiment=smollm2_gsm8k", "protocol.stage=final", f"protocol.selection_dir={chosen}",
                     "method=topk")
    params = final.hydra.sweeper.params
    assert set(params.method.split(",")) == set(methods) | {"none"} and params.seed == "0,1,2"
    assert final.eval.split == "test" and final.task.validation_size == 500  # trains on the same examples
    assert protocol_lr("topk", _root_=final) == 1e-4
    none = composed("+experiment=smollm2_gsm8k", "protocol.stage=final", f"protocol.selection_dir={chosen}", "method=none")
    assert protocol_lr("none", _root_=none) == none.protocol.lr_grid.none[0]  # trains nothing: no selection needed
    with pytest.raises(ConfigError, match=rf"method 'lora'.*{chosen}"):
        protocol_lr("lora", _root_=composed("+experiment=smollm2_gsm8k", "protocol.stage=final",
                                            f"protocol.selection_dir={chosen}", "method=lora"))


# -- both stages of the tiny protocol, for real -------------------------------------------------------

def test_tiny_protocol_runs_both_stages(tmp_path, cache_dir):
    common = (f"cache_dir={cache_dir}", "store_dir=outputs/store")
    run_cli(tmp_path, "-m", "+experiment=protocol_tiny", "hydra.sweep.dir=selection", *common)
    selection = [json.loads(p.read_text()) for p in result_files(tmp_path / "selection")]
    assert len(selection) == 4 and {r["status"] for r in selection} == {"ok"}
    for record in selection:
        assert record["eval_split"] == "validation" and record["seed"] == 0
        assert record["config"]["protocol"]["stage"] == "selection"
        assert list(record["metrics"]["accuracy_by_task"]) == ["validation"]
        assert record["validation"]["size"] == 60 and record["validation"]["sha256"]
    assert len({r["validation"]["sha256"] for r in selection}) == 1  # one split for every run
    grid = {r["method"]: r["config"]["protocol"]["lr_grid"][r["method"]] for r in selection}
    assert {(r["method"], r["config"]["train"]["lr"]) for r in selection} == {(m, lr) for m, g in grid.items() for lr in g}
    # The best validation lr per method, computed here from the records (tie: the smaller lr).
    expected = {}
    for method in grid:
        runs = sorted((r for r in selection if r["method"] == method), key=lambda r: r["config"]["train"]["lr"])
        expected[method] = max(runs, key=lambda r: r["metrics"]["accuracy"])["config"]["train"]["lr"]
    assert selection_records(tmp_path / "selection") and {m: best_lr(selection, m) for m in grid} == expected

    listed = subprocess.run([sys.executable, "-m", "bench.protocol", "selection", str(tmp_path / "selection")],
                            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert listed.stdout.count("<- chosen") == len(grid)

    run_cli(tmp_path, "-m", "+experiment=protocol_tiny", "protocol.stage=final",
            f"protocol.selection_dir={tmp_path / 'selection'}", "hydra.sweep.dir=final", *common)
    final = [json.loads(p.read_text()) for p in result_files(tmp_path / "final")]
    assert len(final) == 6 and {r["status"] for r in final} == {"ok"}
    for method, lr in expected.items():
        runs = [r for r in final if r["method"] == method]
        assert sorted(r["seed"] for r in runs) == [0, 1, 2]
        assert {r["config"]["train"]["lr"] for r in runs} == {lr}
    for record in final:
        assert record["eval_split"] == "test" and record["config"]["protocol"]["stage"] == "final"
        assert list(record["metrics"]["accuracy_by_task"]) == ["arithmetic"]
        assert record["validation"] == selection[0]["validation"]  # trained without the same held-out examples

    # The results page from the two stages' records: every key the protocol's JSON promises.
    page = tmp_path / "results" / "tiny"
    subprocess.run([sys.executable, "-m", "analysis.report", str(tmp_path / "selection"), str(tmp_path / "final"),
                    "--results", str(page), "--out", str(tmp_path / "report")],
                   capture_output=True, text=True, check=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    results = json.loads(page.with_suffix(".json").read_text())
    assert set(results) >= {"device", "commit", "wall_clock_s", "protocol", "selection", "methods",
                            "adagradselect_selection"}
    assert set(results["protocol"]) >= {"epochs", "seeds", "validation_size", "lr_grid"}
    assert results["protocol"]["seeds"] == [0, 1, 2] and results["protocol"]["validation_size"] == 60
    chosen = {row["method"]: row["lr"] for row in results["methods"]}
    assert chosen == expected  # the page's selection is the final stage's
    for row in results["methods"]:
        assert set(row) >= {"method", "lr", "seeds", "test_accuracy_mean", "ci95", "vs_full", "vs_lora",
                            "memory_ratio_vs_full", "time_ratio_vs_full"}
    assert {(row["method"], row["lr"]) for row in results["selection"]} == {(r["method"], r["config"]["train"]["lr"])
                                                                             for r in selection}
