"""The versions of kombu and py-amqp in use are within the bounds pyproject.toml declares (ecotone_django reads
some of their internals, so each has an upper bound: the next minor version is untested until the bound moves)."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
BOUNDED = ("kombu", "amqp")


def requirements() -> dict[str, Requirement]:
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return {req.name: req for req in map(Requirement, declared)}


@pytest.mark.parametrize("name", BOUNDED)
def test_the_dependency_has_an_upper_bound(name: str) -> None:
    specifier = requirements()[name].specifier
    assert any(spec.operator in ("<", "<=", "==", "~=") for spec in specifier), f"{name}{specifier} has no upper bound"


@pytest.mark.parametrize("name", [*BOUNDED, "celery"])
def test_the_installed_version_is_within_the_declared_bounds(name: str) -> None:
    specifier = requirements()[name].specifier
    installed = version(name)
    assert specifier.contains(installed, prereleases=True), f"{name} {installed} is outside {specifier}"
