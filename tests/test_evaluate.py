"""bench/evaluate.limit_examples: `eval.limit` as the first N or a seeded sample."""
from __future__ import annotations

import pytest

from bench.evaluate import limit_examples
from bench.tasks.base import Example

EXAMPLES = [Example(id=str(i), prompt=f"q{i}", target="t", gold="g") for i in range(100)]


def ids(examples):
    return [int(ex.id) for ex in examples]


def test_no_limit_and_first_n():
    assert limit_examples(EXAMPLES, None) == EXAMPLES
    assert ids(limit_examples(EXAMPLES, 3)) == [0, 1, 2]


def test_seeded_sample_is_reproducible_ordered_and_seed_dependent():
    a = ids(limit_examples(EXAMPLES, 10, "random", seed=0))
    assert a == ids(limit_examples(EXAMPLES, 10, "random", seed=0))
    assert a == sorted(a) and len(set(a)) == 10 and a != list(range(10))
    assert a != ids(limit_examples(EXAMPLES, 10, "random", seed=1))
    assert ids(limit_examples(EXAMPLES, 500, "random", seed=0)) == list(range(100))


def test_bad_values():
    with pytest.raises(ValueError, match="eval.limit must be positive"):
        limit_examples(EXAMPLES, 0)
    with pytest.raises(ValueError, match=r"eval.sample='some'; allowed: first, random"):
        limit_examples(EXAMPLES, 3, "some")
