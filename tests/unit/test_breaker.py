"""The circuit breaker in front of a broker: closed, open for a cool-down, one probe, closed or open again."""

from __future__ import annotations

import pytest

from ecotone_django.channels.breaker import CircuitBreaker
from ecotone_django.exceptions import BrokerUnavailableError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_failure_opens_it_and_calls_fail_at_once_until_the_cool_down_ends(clock: Clock) -> None:
    breaker = CircuitBreaker("orders", cool_down=5.0, clock=clock)
    breaker.before_call()  # closed: through
    breaker.failed(TimeoutError("no confirm"))
    assert breaker.state == "open"
    clock.now += 4.9
    with pytest.raises(BrokerUnavailableError, match=r"'orders' is unavailable \(TimeoutError: no confirm\)") as exc:
        breaker.before_call()
    assert exc.value.retry_after == pytest.approx(0.1)


def test_after_the_cool_down_one_call_probes_and_the_others_still_fail_at_once(clock: Clock) -> None:
    breaker = CircuitBreaker("orders", cool_down=5.0, clock=clock)
    breaker.failed(OSError("reset"))
    clock.now += 5.0
    assert breaker.state == "half-open"
    breaker.before_call()  # the probe
    with pytest.raises(BrokerUnavailableError, match="a probe is under way"):
        breaker.before_call()
    breaker.succeeded()
    assert breaker.state == "closed"
    breaker.before_call()


def test_a_failed_probe_opens_it_for_another_cool_down(clock: Clock) -> None:
    breaker = CircuitBreaker("orders", cool_down=5.0, clock=clock)
    breaker.failed(OSError("reset"))
    clock.now += 5.0
    breaker.before_call()
    breaker.failed(TimeoutError("still nothing"))
    assert breaker.state == "open"
    clock.now += 4.0
    with pytest.raises(BrokerUnavailableError, match="still nothing"):
        breaker.before_call()
    clock.now += 1.0
    breaker.before_call()


def test_its_own_refusals_do_not_extend_the_cool_down(clock: Clock) -> None:
    breaker = CircuitBreaker("orders", cool_down=5.0, clock=clock)
    breaker.failed(OSError("reset"))
    clock.now += 3.0
    with pytest.raises(BrokerUnavailableError) as exc:
        breaker.before_call()
    breaker.failed(exc.value)
    clock.now += 2.0
    breaker.before_call()  # the probe, on time


def test_a_cool_down_of_zero_turns_it_off(clock: Clock) -> None:
    breaker = CircuitBreaker("orders", cool_down=0, clock=clock)
    breaker.failed(OSError("reset"))
    breaker.before_call()
    assert breaker.state == "closed"


def test_a_quick_failure_leaves_it_closed_and_ends_a_probe(clock: Clock) -> None:
    breaker = CircuitBreaker("orders", cool_down=5.0, clock=clock)
    breaker.failed(ConnectionRefusedError("refused"), slow=False)  # a stopped broker: trying costs nothing
    assert breaker.state == "closed"
    breaker.failed(TimeoutError("no answer"))
    clock.now += 5.0
    breaker.before_call()  # the probe: refused at once, the broker answers again
    breaker.failed(ConnectionRefusedError("refused"), slow=False)
    assert breaker.state == "closed"
    breaker.before_call()
