"""Full fine-tuning: every parameter trains (the base class's behaviour, named)."""
from methods.base import Method


class FullFineTuning(Method):
    cuda_graph_safe = True  # every parameter trains on every step, no hooks
