"""analysis/selection.py: the block x step heatmap and the selection entropy from metrics.jsonl."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from matplotlib.image import imread

from analysis.collect import collect
from analysis.selection import (adagradselect_summary, block_methods, read_rows, read_trace, selection_entropy,
                                selection_matrix, selection_plots)
from analysis_records import smoke_record, write


def _metrics(run_dir, trace):
    lines = [{"step": step, "loss": 1.0, "active_blocks": len(ids), "active_block_ids": ids} for step, ids in trace]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_matrix_and_entropy_have_known_values():
    locked = {s: [1, 3] for s in range(1, 21)}                       # the same 2 of 4 blocks every step
    rotating = {s: [(s - 1) % 4] for s in range(1, 21)}             # one block, round robin over 4
    matrix, steps = selection_matrix(locked, n_blocks=4)
    assert matrix.shape == (4, 20) and steps == list(range(1, 21))
    assert matrix[:, 0].tolist() == [0, 1, 0, 1]
    assert selection_entropy(matrix) == pytest.approx(np.ones(20), abs=1e-12)  # log2 2
    spread = selection_entropy(selection_matrix(rotating, n_blocks=4)[0], window=4)
    # step 1: one pick -> 0 bits; step 2: two blocks -> 1 bit; step 3: log2 3; from step 4: 2 bits
    assert spread[:4] == pytest.approx([0.0, 1.0, math.log2(3), 2.0], abs=1e-12)
    assert spread[4:] == pytest.approx(np.full(16, 2.0), abs=1e-12)


def test_a_resumed_step_keeps_its_last_line(tmp_path):
    _metrics(tmp_path, [(1, [0]), (2, [1]), (2, [2]), (3, [])])
    assert read_trace(tmp_path) == {1: [0], 2: [2], 3: []}


def test_report_plots_every_traced_run_and_names_those_without_a_trace(tmp_path):
    """Block methods come from the records: adagradselect and topk have a traced run each, so their
    untraced runs are named; full has no traced run, so it is not a block method. The AdaGradSelect
    run's line carries its selection summary; the heatmap spans every epoch."""
    traced, untraced = [], []
    spe = 10
    adagrad = [(s, [s % 4, (s + 1) % 4]) for s in range(1, 31)]
    for job, (method, trace) in enumerate([("adagradselect", adagrad), ("topk", [(s, [0]) for s in range(1, 6)]),
                                           ("topk", None), ("full", None), ("adagradselect", None)]):
        # a seed per job: records of one identity would count once (the newest), hiding the traced ones
        name, body, lines = smoke_record(method, "tiny-llama", job, [True, False])
        body["config"]["model"] = {"dims": {"num_hidden_layers": 6}}
        body["steps_per_epoch"] = spe
        path = write(tmp_path, f"{job}-{name}", body, lines)
        if trace:
            _metrics(path.parent, trace)
            traced.append(path.parent)
        else:
            (path.parent / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
            untraced.append(path.parent)
    rows = [json.loads(x) for x in (traced[0] / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # explore steps 1 and 2 measured blocks 2, 3 as the largest
        row["explore"] = int(row["step"] <= 2)
        if row["explore"]:
            row["block_grad_norms"] = [0.1, 0.2, 0.9, 0.8, 0.0, 0.0]
    (traced[0] / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    runs = collect([tmp_path])
    assert block_methods(runs, {d: read_rows(d) for d in runs["run_dir"]}) in (["adagradselect", "topk"],
                                                                              ["topk", "adagradselect"])
    out = selection_plots(runs, tmp_path / "report")
    png = tmp_path / "report" / "selection_0-adagradselect-tiny-llama-s0.png"
    assert (f"plot: {png} (k 2: 4 distinct blocks in epoch 1; final set's overlap with the top-k by mean "
            "explore gradient norm 1.00)") in out  # step 30 trained [2, 3], the explore steps' top 2
    assert imread(png).shape[0] > 100
    for path in (untraced[0], untraced[2]):
        assert f"selection: {path}: no active_block_ids in metrics.jsonl (status ok): not drawn" in out
    assert not any(str(untraced[1]) in line for line in out)  # full: not a block method
    assert (tmp_path / "report" / "selection_entropy.png").exists()
    # 6 blocks from the model's config, though the trace only ever names blocks 0..3.
    matrix, _ = selection_matrix(read_trace(traced[0]), n_blocks=6)
    assert matrix.shape == (6, 30) and matrix[4:].sum() == 0


def test_adagradselect_summary_on_hand_made_rows():
    """Epoch 1 = steps 1..3: blocks 0, 1, 2, 5 trained; explore steps 1 and 3 measured norms whose
    mean ranks blocks 2, 5, 1 first (block 5 only by the mean: it was top-2 at step 3 alone); the
    last step trained [1, 2]: overlap with the top-2 [2, 5] is 1/2. Rows without norms, a null
    loss, a repeated and an out-of-order step change nothing."""
    rows = [
        {"step": 1, "loss": 2.0, "active_block_ids": [1, 2], "explore": 1, "block_grad_norms": [0.1, 0.5, 0.9, 0.0, 0.0, 0.2]},
        {"step": 2, "loss": None, "active_block_ids": [0, 2], "explore": 0},
        {"step": 3, "loss": None, "active_block_ids": [2, 5], "explore": 1, "block_grad_norms": [0.1, 0.3, 0.7, 0.0, 0.0, 1.2]},
        {"step": 5, "loss": 1.0, "active_block_ids": [1, 2], "explore": 0},
        {"step": 4, "loss": None, "active_block_ids": [3, 4], "explore": 0},
    ]
    summary = adagradselect_summary(rows, steps_per_epoch=3, k=2)
    assert summary == {"k": 2, "distinct_blocks_epoch1": 4, "final_overlap_with_grad_topk": 0.5}
    assert adagradselect_summary(rows, steps_per_epoch=5, k=3)["distinct_blocks_epoch1"] == 6
    assert adagradselect_summary(rows, steps_per_epoch=3, k=3)["final_overlap_with_grad_topk"] == pytest.approx(2 / 3)
    no_norms = [{k: v for k, v in r.items() if k != "block_grad_norms"} for r in rows]
    assert adagradselect_summary(no_norms, 3, 2)["final_overlap_with_grad_topk"] is None
    with pytest.raises(ValueError, match="steps_per_epoch and k must be >= 1"):
        adagradselect_summary(rows, 0, 2)
