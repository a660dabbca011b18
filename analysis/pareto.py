"""The memory/accuracy Pareto frontier: the methods no other method beats on both axes."""
from __future__ import annotations

import pandas as pd


def pareto_front(points: pd.DataFrame, cost: str, gain: str) -> pd.Series:
    """True for each row that no other row dominates: another row dominates it when its cost is
    <= and its gain >=, with at least one strict. Rows missing either value are never on it."""
    valid = points[cost].notna() & points[gain].notna()
    on_front = pd.Series(False, index=points.index)
    for i in points.index[valid]:
        c, g = points.at[i, cost], points.at[i, gain]
        others = points[valid & (points.index != i)]
        dominated = ((others[cost] <= c) & (others[gain] >= g) & ((others[cost] < c) | (others[gain] > g))).any()
        on_front[i] = not dominated
    return on_front
