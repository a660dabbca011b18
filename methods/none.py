"""No fine-tuning: evaluates the starting model as it is (the "base" row of every table)."""
import torch

from methods.base import Method


class NoFineTuning(Method):
    trains = False

    def trainable_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        return []
