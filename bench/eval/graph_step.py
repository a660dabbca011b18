"""What a decode step needs to run as a CUDA graph: an autocast that records its casts, and
PyTorch's capture recipe (warm-up on a side stream, then record); shared by both static engines."""
from __future__ import annotations

import torch

from bench.runtime import autocast


def graph_autocast(device: torch.device, precision: str, cuda_graphs: bool):
    """The run's autocast; casts inside a captured graph must be recorded, not served from autocast's
    weight cache (which the graph would then read from a freed buffer)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=not cuda_graphs)
    return autocast(device, precision)


def capture_cuda_graph(step, restore, device: torch.device) -> torch.cuda.CUDAGraph:
    """Warm `step` up on a side stream (PyTorch's CUDA graph recipe), then record it as a graph.
    `restore` puts back the state that the warm-up runs changed; capture records but does not run."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(2):
            restore()
            step()
    torch.cuda.current_stream(device).wait_stream(stream)
    restore()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    restore()
    return graph
