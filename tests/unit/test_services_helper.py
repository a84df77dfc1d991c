"""``tests.helpers.services``: under CI a missing service fails the test, whichever way CI spells "true"."""

from __future__ import annotations

import pytest

from tests.helpers import services


@pytest.mark.parametrize("value", ["1", "true", "True", "TRUE", "yes", "Yes", "on", "github-actions"])
def test_a_truthy_ci_is_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert services.in_ci()


@pytest.mark.parametrize("value", ["", "0", "false", "False", "no", "off"])
def test_a_falsy_or_empty_ci_is_not_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert not services.in_ci()


def test_no_ci_variable_is_not_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    assert not services.in_ci()


@pytest.mark.parametrize(("ci", "outcome"), [("1", pytest.fail.Exception), ("yes", pytest.fail.Exception)])
def test_a_missing_service_fails_under_ci(monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    with pytest.raises(outcome, match="CI requires it"):
        services.require("redis")


def test_a_missing_service_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(pytest.skip.Exception):
        services.require("redis")
