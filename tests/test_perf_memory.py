"""lab/memory.py: settings parsing and the rendered page (measuring needs a GPU)."""
from __future__ import annotations

import json

import pytest
import torch

from lab.cli import main as lab
from lab.memory import parse_setting


def test_settings_parse_and_bad_ones_are_refused():
    assert parse_setting("topk:chunked_ce+compile+gc") == {
        "setting": "topk:chunked_ce+compile+gc", "method": "topk", "fast_path": "chunked_ce", "compile": True,
        "gradient_checkpointing": True}
    assert parse_setting("full")["fast_path"] == "none"
    with pytest.raises(ValueError, match=r"METHOD\[:FAST_PATH\]\[\+compile\]\[\+gc\], FAST_PATH one of none, chunked_ce"):
        parse_setting("full:fused")
    with pytest.raises(ValueError, match="'full\\+ckpt'"):
        parse_setting("full+ckpt")


def test_render_writes_every_row(tmp_path):
    row = {"shape": "llama3.2-1b", "batch_size": 8, "setting": "full", "status": "ok", "weights_gib": 4.6,
           "step_start_gib": 13.87, "forward_keeps_gib": 12.22, "peak_gib": 30.01, "transient_gib": 16.14,
           "max_peak_gib": 30.01, "left_allocated_gib": 0.0}
    report = {"command": "python -m lab memory --shapes llama3.2-1b", "date": "2026-11-23",
              "device_name": "H100", "rows": [row, {**row, "setting": "static25", "status": "oom"}]}
    (tmp_path / "m.json").write_text(json.dumps(report))
    lab(["memory", "--render", str(tmp_path / "m.json"), "--md", str(tmp_path / "m.md")])
    text = (tmp_path / "m.md").read_text()
    assert "| llama3.2-1b | 8 | full | ok | 4.60 | 13.87 | 12.22 | 30.01 | 16.14 | 30.01 | 0.00 |" in text
    assert "| static25 | oom |" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_measuring_without_cuda_is_refused():
    with pytest.raises(SystemExit, match="no CUDA device"):
        lab(["memory", "--settings", "full"])


def test_peak_sites_replays_allocations_and_groups_them_by_site():
    from lab.memory import peak_sites

    gib = 1024 ** 3
    model_frame = {"filename": "/x/transformers/models/llama/modeling_llama.py", "line": 10, "name": "forward"}
    torch_frame = {"filename": "/y/torch/nn/modules/module.py", "line": 1, "name": "_call_impl"}
    events = [
        {"action": "alloc", "addr": 1, "size": gib, "frames": [torch_frame, model_frame]},
        {"action": "alloc", "addr": 2, "size": gib // 2, "frames": []},
        {"action": "alloc", "addr": 3, "size": gib // 4, "frames": [model_frame]},
        {"action": "free_completed", "addr": 2, "size": gib // 2},
        {"action": "alloc", "addr": 4, "size": gib // 8, "frames": [model_frame]},  # below the peak
    ]
    got = peak_sites({"device_traces": [events]}, torch.device("cuda", 0))
    assert got["above_step_start_gib"] == 1.75 and got["event"] == 2
    assert got["sites"] == [["llama/modeling_llama.py:10 forward", 1.25],
                            ["autograd engine / optimizer (no Python frame)", 0.5]]
