"""analysis/plots.py: the PNGs are written from the same numbers as the tables."""
from __future__ import annotations

from matplotlib.image import imread

from analysis.collect import collect
from analysis.plots import plot_accuracy_vs_memory, plot_training_time
from analysis_records import paper_runs


def test_both_plots_are_written_with_one_panel_per_model(tmp_path):
    runs = collect([paper_runs(tmp_path / "runs")])
    scatter = plot_accuracy_vs_memory(runs, "peak_gpu_memory_gib", tmp_path / "out" / "acc_mem.png")
    bars = plot_training_time(runs, tmp_path / "out" / "time.png")
    # m2 has no run with both memory and accuracy: one panel (m1); both models have a training time.
    height, width, _ = imread(scatter).shape
    assert width / height < 2.5
    height, width, _ = imread(bars).shape
    assert width / height > 1.5


def test_no_memory_values_means_no_scatter_plot(tmp_path):
    runs = collect([paper_runs(tmp_path / "runs")])
    assert plot_accuracy_vs_memory(runs, "peak_gpu_reserved_gib", tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


def test_coinciding_points_are_drawn_side_by_side():
    import pandas as pd
    import pytest

    from analysis.plots import _spread

    x = pd.Series({"full": 150_000.0, "lisa": 150_000.0, "badam": 150_000.0, "lora": 1_000_000.0})
    y = pd.Series({"full": 55.0, "lisa": 30.0, "badam": 30.0, "lora": 40.0})
    drawn = _spread(x, y, log_x=True)
    assert drawn["full"] == pytest.approx(x["full"]) and drawn["lora"] == pytest.approx(x["lora"])  # alone: in place
    assert drawn["lisa"] < x["lisa"] < drawn["badam"]  # together: either side of the true x
