"""Deadlines on a kombu connection: nothing here waits for a broker without a limit.

A broker that stops answering while the TCP connection stays open (a dropped route, a dead load
balancer, a proxy that stopped forwarding) is not refused: every read waits. py-amqp puts its socket in
blocking mode after the handshake, and its ``Connection.close()`` waits for the broker's ``close-ok``
with no timeout, so a failed publish followed by a polite close could block its caller for as long as
the outage lasted. Here:

* :func:`connect` opens a connection (the TCP connect and each handshake frame bounded by the
  connection's ``connect_timeout``) and then gives its socket a timeout, so that every later wait
  without one of its own (an RPC reply, a write, a close-ok) ends in ``socket.timeout``;
* :func:`bound` moves that timeout (a publisher sets what is left of its deadline);
* :func:`close` closes politely within a deadline, and :func:`abandon` drops a connection that has
  failed without talking to the broker at all: its socket is closed and kombu forgets it.

Only py-amqp connections have a socket to bound; the other transports keep their own timeouts
(Redis: ``socket_timeout`` in ``broker_transport_options``; SQS: boto3's; Kafka: librdkafka's).
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kombu import Connection

__all__ = ["abandon", "amqp_connection", "bound", "close", "connect", "raw_socket"]

logger = logging.getLogger("ecotone_django.channels.celery")


def amqp_connection(conn: Connection) -> Any:
    """The py-amqp connection under ``conn`` if it is one and is open; else ``None`` (never connects)."""
    if conn.transport.driver_type != "amqp" or not conn.connected:
        return None
    return conn.connection


def raw_socket(conn: Connection) -> socket.socket | None:
    """The TCP socket under an open py-amqp connection; ``None`` for other transports or when closed."""
    amqp = amqp_connection(conn)
    if amqp is None or not amqp.connected:
        return None
    sock: socket.socket | None = getattr(amqp.transport, "sock", None)
    return sock


def bound(conn: Connection, timeout: float) -> None:
    """Make every socket wait on ``conn`` that names no timeout of its own last at most ``timeout`` s."""
    sock = raw_socket(conn)
    if sock is not None:
        sock.settimeout(max(timeout, 0.001))


def connect(conn: Connection, timeout: float) -> Connection:
    """Open ``conn`` now (no retries: the caller is the retry loop), then bound its waits by ``timeout``."""
    conn.ensure_connection(max_retries=0)
    bound(conn, timeout)
    return conn


def abandon(conn: Connection) -> None:
    """Drop ``conn`` without a word to the broker: close its socket and let kombu forget it.

    For a connection that has just failed (a timeout, a lost socket): its broker may never answer a
    close. The broker notices the closed socket and requeues what the connection held unacknowledged.
    """
    amqp = amqp_connection(conn)
    if amqp is not None:
        try:
            amqp.collect()  # closes the socket and forgets the channels, with no close handshake
        except Exception:
            logger.debug("dropping a broken broker socket failed", exc_info=True)
    try:
        conn.release()  # on py-amqp nothing is left to send; elsewhere the transport's own release
    except Exception:
        logger.debug("releasing a broken broker connection failed", exc_info=True)


def close(conn: Connection, timeout: float) -> None:
    """Close ``conn`` politely if the broker answers within ``timeout`` s, else drop it (:func:`abandon`).

    kombu closes the channel and then the connection, each waiting for its close-ok: each wait gets
    half of ``timeout``.
    """
    try:
        bound(conn, timeout / 2)
        conn.release()
    except Exception:
        logger.debug("closing the broker connection failed; dropping it", exc_info=True)
    finally:
        abandon(conn)
