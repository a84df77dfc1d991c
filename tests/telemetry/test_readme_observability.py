"""The README's Observability blocks run: instrumenting with the SDK, and the JSON logging configuration.

They run in a worker-like subprocess (the SDK's global tracer provider can be set once per process): it
executes both blocks, sends a command that always fails inside a span, lets an in-process worker handle
it, and prints what the console exporter and the JSON formatter wrote.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.processes import REPO_ROOT
from tests.integration.conftest import worker_env

README = Path(REPO_ROOT) / "README.md"

SCRIPT = """
import django, logging.config, sys
django.setup()
blocks = {blocks!r}
exec(blocks[0], {{}})
settings_namespace = {{}}
exec(blocks[1], settings_namespace)
logging.config.dictConfig(settings_namespace["LOGGING"])
from opentelemetry import trace
from ecotone_django import command_bus
from ecotone_django.worker import Worker
from tests.testapp.messaging import AlwaysFails
with trace.get_tracer("readme").start_as_current_span("request"):
    command_bus.send(AlwaysFails("readme"), metadata={{"tenant": "shop-7"}})
Worker(["db"], stop_when_empty=True, relay=False).run()
trace.get_tracer_provider().force_flush()
"""


def observability_blocks() -> list[str]:
    section = README.read_text().split("## Observability", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```py\n(.*?)```", section, flags=re.S)


def test_the_readme_has_two_observability_blocks() -> None:
    blocks = observability_blocks()
    assert len(blocks) == 2
    assert "EcotoneInstrumentor().instrument()" in blocks[0] and "LOGGING = {" in blocks[1]


@pytest.mark.django_db(databases=["default", "big_corp", "enterprise_x"], transaction=True)
def test_the_observability_blocks_trace_and_log_a_worker() -> None:
    env = {k: v for k, v in worker_env().items() if v is not None}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(blocks=observability_blocks())],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith('{"time"')]
    failed = [r for r in records if "failed (attempt" in r["message"]]
    assert [(r["handler"], r["channel"], r["tenant"], r["attempt"]) for r in failed] == [
        ("tests.testapp.messaging.always_fails", "db", "shop-7", 1),
        ("tests.testapp.messaging.always_fails", "db", "shop-7", 2),
    ]
    assert all(r["message_id"] and r["correlation_id"] for r in failed)
    assert done.stdout.count('"name": "process db"') == 3, done.stdout[-3000:]
    assert '"name": "ecotone.dead_letter"' in done.stdout
