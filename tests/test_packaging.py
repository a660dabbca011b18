"""The wheel ships the product and only the product: pyproject.toml's `packages` are exactly the
package folders of bench/, methods/, analysis/, conf/ and the launcher plugin, so the benchmark lab
(lab/, run from a checkout) and the tests stay out, a new subpackage of the product is not silently
left out, and no listed package is one that is gone."""
from __future__ import annotations

import tomllib

from conftest import REPO

SHIPPED_ROOTS = ("bench", "methods", "analysis", "hydra_plugins/slmbench_launcher")


def listed_packages() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def product_packages() -> set[str]:
    """Every folder with an __init__.py below the shipped roots, dotted; and conf (yaml only)."""
    found = {"conf"}
    for root in SHIPPED_ROOTS:
        for init in (REPO / root).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(REPO).parts))
    return found


def test_the_wheel_lists_every_product_package_and_nothing_else():
    listed = listed_packages()
    assert len(listed) == len(set(listed)), listed
    assert set(listed) == product_packages()


def test_the_lab_and_the_tests_are_not_shipped():
    listed = listed_packages()
    assert (REPO / "lab" / "__init__.py").exists()  # the lab is a package of the checkout...
    assert not [p for p in listed if p.split(".")[0] in ("lab", "tests")]  # ...that the wheel leaves out
