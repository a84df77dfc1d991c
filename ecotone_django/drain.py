"""``--stop-when-empty``: deciding that a worker's channels have no work left.

Empty means: no due message in any database the worker serves, whether another consumer holds it or
not, and for a broker channel none ready in its queue, none held by this worker's consumers and no
outbox row still waiting for the relay. Delayed messages that are not yet due do not count.

Every consumer thread reports each look for work to :meth:`Drain.looked`: whether it found any, and,
when it did not, whether its consumer still knows of some (:meth:`~ecotone_django.channels.DatabaseConsumer.pending`
and the broker consumer's ``pending``). The channels are empty once every consumer thread has come back
from its batch and found nothing twice in a row; a thread that finds work starts the count again for
all of them. Asking twice closes the race with a commit that lands while another thread is asking.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from .channels import BrokerChannel
from .clock import now
from .storage import outbox as table

__all__ = ["Drain", "waiting"]

#: Empty looks in a row every consumer thread needs before the channels count as empty.
LOOKS = 2


class Drain:
    """Tells the consumer threads of one worker when there is nothing left to do (``empty`` is set)."""

    def __init__(self, consumers: int) -> None:
        self.consumers = consumers
        self.empty = threading.Event()
        self._empty_looks: dict[str, int] = {}  # consumer thread → its empty looks since anyone found work
        self._lock = threading.Lock()

    def looked(self, found: bool, pending: Callable[[], bool]) -> None:
        """Record a look of the calling consumer thread; ``pending`` is asked only when it found nothing."""
        found = found or pending()
        me = threading.current_thread().name
        with self._lock:
            if found:
                self._empty_looks = dict.fromkeys(self._empty_looks, 0)
                self._empty_looks[me] = 0
                return
            self._empty_looks[me] = self._empty_looks.get(me, 0) + 1
            looks = self._empty_looks.values()
            if len(self._empty_looks) >= self.consumers and all(n >= LOOKS for n in looks):
                self.empty.set()


def waiting(
    aliases: Sequence[str], database_channels: Sequence[str], brokers: Sequence[BrokerChannel], tenants: Sequence[str]
) -> tuple[int, int]:
    """Messages left on these channels in ``aliases``: (due, delayed).

    Due counts the rows of database channels that are due, the broker rows the relay has yet to publish
    and the messages ready in the brokers' queues.
    """
    names = [*database_channels, *(broker.name for broker in brokers)]
    moment, due, delayed = now(), 0, 0
    for alias in aliases:
        counts = table.count_waiting(alias, names, moment, tenants)
        due, delayed = due + counts[0], delayed + counts[1]
    return due + sum(broker.depth() for broker in brokers), delayed
