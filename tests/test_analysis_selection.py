"""analysis/selection.py: the block x step heatmap and the selection entropy from metrics.jsonl."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from matplotlib.image import imread

from analysis.collect import collect
from analysis.selection import read_trace, selection_entropy, selection_matrix, selection_plots
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
    traced, untraced = [], []
    for job, (method, trace) in enumerate([("adagradselect", [(s, [s % 4, (s + 1) % 4]) for s in range(1, 31)]),
                                           ("topk", None), ("full", None)]):
        name, body, lines = smoke_record(method, "tiny-llama", 0, [True, False])
        body["config"]["model"] = {"dims": {"num_hidden_layers": 6}}
        path = write(tmp_path, f"{job}-{name}", body, lines)
        if trace:
            _metrics(path.parent, trace)
            traced.append(path.parent)
        else:
            (path.parent / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
            untraced.append(path.parent)
    out = selection_plots(collect([tmp_path]), tmp_path / "report")
    png = tmp_path / "report" / "selection_0-adagradselect-tiny-llama-s0.png"
    assert f"plot: {png}" in out and imread(png).shape[0] > 100
    assert f"selection: {untraced[0]}: no active_block_ids in metrics.jsonl (status ok): not drawn" in out
    assert not any(str(untraced[1]) in line for line in out)  # full: not a block method, no trace
    assert (tmp_path / "report" / "selection_entropy.png").exists()
    # 6 blocks from the model's config, though the trace only ever names blocks 0..3.
    matrix, _ = selection_matrix(read_trace(traced[0]), n_blocks=6)
    assert matrix.shape == (6, 30) and matrix[4:].sum() == 0
