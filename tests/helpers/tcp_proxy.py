"""A loopback TCP proxy that can black-hole its connections: they stay open, nothing goes through.

A broker behind a dropped route or a dead load balancer does not refuse anything: the connections stay
open and every read waits. This proxy plays that outage in the test process::

    with TcpProxy(("127.0.0.1", 5672)) as proxy:
        url = proxy.url("amqp://guest:guest@127.0.0.1:5672//")   # the same URL through the proxy
        ...
        proxy.black_hole()   # connections stay open; no byte goes either way; new ones are accepted
        ...
        proxy.heal()         # everything that waited goes through, as TCP retransmission would deliver it

While black-holed the proxy reads nothing, so what either side sends waits in the kernel's buffers (as it
would in TCP's retransmission queue) and arrives once healed — unless the sender closed the connection
first. A new connection is accepted (its TCP handshake completes) but its first byte waits too.
Threads, standard library only.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

__all__ = ["TcpProxy"]

_POLL = 0.05  # seconds between looks at the stop and forwarding flags


class TcpProxy:
    """Forwards every connection to 127.0.0.1:<port> to ``upstream``, until told to black-hole them."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.accepted = 0  # connections accepted so far

    # -- control ------------------------------------------------------------------------------------------

    def url(self, url: str) -> str:
        """``url`` with its host and port replaced by this proxy's."""
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)
        auth = f"{netloc[0]}@" if len(netloc) == 2 else ""
        return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{self.port}"))

    def black_hole(self) -> None:
        """Stop forwarding in both directions; connections stay open."""
        self._forwarding.clear()

    def heal(self) -> None:
        """Forward again (what waited goes through)."""
        self._forwarding.set()

    @property
    def forwarding(self) -> bool:
        return self._forwarding.is_set()

    @contextlib.contextmanager
    def black_holed(self) -> Iterator[None]:
        """Black-holed for the block, forwarding again after it whatever happens."""
        self.black_hole()
        try:
            yield
        finally:
            self.heal()

    def open_connections(self) -> int:
        """Client connections the proxy holds open."""
        with self._lock:
            return len(self._sockets) // 2

    # -- life cycle ---------------------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._forwarding.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        _close(self._listener)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- the work -----------------------------------------------------------------------------------------

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"tcp-proxy-{self.port}")  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._spawn(self._connect_upstream, client)

    def _connect_upstream(self, client: socket.socket) -> None:
        while not self._forwarding.wait(_POLL):  # a black-holed route: the first byte waits
            if self._stopped.is_set():
                _close(client)
                return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _close(client)
            return
        with self._lock:
            self._sockets.update((client, server))
        self._spawn(self._pump, client, server)
        self._spawn(self._pump, server, client)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while not self._stopped.is_set():
                if not self._forwarding.wait(_POLL):
                    continue
                if not select.select([source], [], [], _POLL)[0]:
                    continue
                if not self._forwarding.is_set():
                    continue
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except (OSError, ValueError):  # ValueError: select() on a socket the other direction closed
            pass
        finally:
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(target)
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)
            _close(source)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
