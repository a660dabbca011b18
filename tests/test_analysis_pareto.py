"""analysis/pareto.py: the memory/accuracy frontier is what the definition says."""
from __future__ import annotations

import pandas as pd

from analysis.pareto import pareto_front


def test_frontier_of_known_points():
    points = pd.DataFrame({"memory": [1.0, 2.0, 3.0, 2.0, None, 0.5, 4.0],
                           "accuracy": [0.5, 0.7, 0.6, 0.7, 0.9, 0.5, 0.7]},
                          index=["a", "b", "c", "b_twin", "no_memory", "cheapest", "same_acc_more_mem"])
    front = pareto_front(points, "memory", "accuracy")
    # a: same accuracy as `cheapest` at more memory -> dominated. c: b is cheaper and better.
    # b and b_twin tie exactly: neither dominates the other. A point without memory is never on it.
    assert front[front].index.tolist() == ["b", "b_twin", "cheapest"]
