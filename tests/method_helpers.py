"""A method's knobs as its conf/method yaml sets them: the only source of their values (the
constructors have no defaults), so a test that builds a method directly changes only what it tests."""
from __future__ import annotations

from omegaconf import OmegaConf

from conftest import compose_config


def method_knobs(name: str, **overrides) -> dict:
    """conf/method/<name>.yaml's knobs (its defaults list composed, `_target_` dropped), with `overrides`."""
    knobs = OmegaConf.to_container(compose_config(f"method={name}").method, resolve=True)
    knobs.pop("_target_")
    return {**knobs, **overrides}
