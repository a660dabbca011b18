"""bench/perf_memory.py: settings parsing and the rendered page (measuring needs a GPU)."""
from __future__ import annotations

import json

import pytest
import torch

from bench.perf_memory import main, parse_setting


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
    report = {"command": "python -m bench.perf_memory --shapes llama3.2-1b", "date": "2026-11-23",
              "device_name": "H100", "rows": [row, {**row, "setting": "static25", "status": "oom"}]}
    (tmp_path / "m.json").write_text(json.dumps(report))
    main(["--render", str(tmp_path / "m.json"), "--md", str(tmp_path / "m.md")])
    text = (tmp_path / "m.md").read_text()
    assert "| llama3.2-1b | 8 | full | ok | 4.60 | 13.87 | 12.22 | 30.01 | 16.14 | 30.01 | 0.00 |" in text
    assert "| static25 | oom |" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_measuring_without_cuda_is_refused():
    with pytest.raises(SystemExit, match="no CUDA device"):
        main(["--settings", "full"])
