"""Each task's knobs are written once, in its yaml: the constructor `_target_` names takes exactly
the yaml's keys, keyword-only, with no defaults of its own (a default there would be a second,
silently different value whenever the yaml and the code disagree)."""
from __future__ import annotations

import inspect

import pytest
import yaml
from hydra.utils import get_class

from conftest import CONF

TASK_YAMLS = sorted((CONF / "task").glob("*.yaml"))


@pytest.mark.parametrize("path", TASK_YAMLS, ids=[p.stem for p in TASK_YAMLS])
def test_task_constructor_takes_the_yaml_keys_keyword_only_without_defaults(path):
    config = yaml.safe_load(path.read_text())
    cls = get_class(config.pop("_target_"))
    params = [p for name, p in inspect.signature(cls.__init__).parameters.items() if name != "self"]
    assert {p.name for p in params} == set(config), f"{path.name} vs {cls.__name__}: keys differ"
    for p in params:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{cls.__name__}({p.name}) is not keyword-only"
        assert p.default is inspect.Parameter.empty, f"{cls.__name__}({p.name}={p.default!r}): the yaml is the only source"


def test_every_task_yaml_states_its_validation_split():
    for path in TASK_YAMLS:
        config = yaml.safe_load(path.read_text())
        assert config["validation_size"] == 0 and "validation_seed" in config, path.name
