"""No docstring of the product quotes a hardware timing ("3.6 ms of a 0.12 s step on an H100"):
such figures age with the hardware and the library versions, so they live in docs/
(docs/performance-analysis.md, 'Measurements behind choices in the code') and the code keeps only
the reason. Read with `ast`, so comments and strings that are not docstrings are not scanned.

The rule: a docstring (module, class or function) that holds a duration (a number with a time
unit) and also names hardware (a GPU model, GPU, CPU, cores, a host or machine). A duration alone
may be a setting's meaning; together with hardware it is a measurement."""
from __future__ import annotations

import ast
import re

import pytest

from conftest import REPO

PRODUCT = ("bench", "methods", "analysis", "hydra_plugins")
NUMBER = r"(?<![\w.])\d[\d,]*(?:\.\d+)?"
DURATION = re.compile(rf"{NUMBER}(?:\s*-\s*{NUMBER})?\s?(?:ns|us|µs|ms|s|secs?|seconds?|min|minutes?|h|hours?)\b")
HARDWARE = re.compile(r"\b(?:[AHLTV]\d{2,3}|GPUs?|CPUs?|cores?|hosts?|machines?)\b|\d+-core\b")


def hardware_timing(text: str) -> str | None:
    """The first duration of `text` when `text` also names hardware, else None."""
    duration = DURATION.search(text)
    return duration.group(0) if duration and HARDWARE.search(text) else None


def docstrings(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    for node in nodes:
        text = ast.get_docstring(node)
        if text:
            yield getattr(node, "name", "module"), text


@pytest.mark.parametrize("text,found", [
    ("clip_grad_norm_ took 3.6 ms of a 0.12 s step on an H100", "3.6 ms"),
    ("the recompile cost 1.1-1.4 s on an H200", "1.1-1.4 s"),
    ("about 10 ms a batch on a 2-core host", "10 ms"),
    ("168 s on a 16-core machine", "168 s"),
    ("a 30 s timeout between polls", None),  # a setting's meaning, no hardware named
    ("one GPU, 16 CPU cores, 8 layers", None),  # hardware, no duration
    ("seconds are counted on the host; 512 rows a chunk", None),
])
def test_the_rule_tells_a_timing_from_a_setting(text, found):
    assert hardware_timing(text) == found


def test_no_product_docstring_quotes_a_hardware_timing():
    files = sorted(p for root in PRODUCT for p in (REPO / root).rglob("*.py"))
    assert len(files) > 50, "the product's modules were not found"
    quoted = [f"{path.relative_to(REPO)} {name}: {timing!r}" for path in files for name, text in docstrings(path)
              if (timing := hardware_timing(text))]
    assert not quoted, ("hardware timings in docstrings (move the figure to docs/performance-analysis.md, "
                        "'Measurements behind choices in the code'):\n" + "\n".join(quoted))
