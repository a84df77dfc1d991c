"""The example project, run the way its users run it: ``manage.py demo`` as a subprocess with the
example's own settings (``example_project.settings``), real worker processes and a SIGKILLed worker.

The SQLite run goes with ``ECOTONE_TEST_DB=sqlite`` (the default), the PostgreSQL + MariaDB +
RabbitMQ run with ``ECOTONE_TEST_DB=postgres``; each is skipped under the other engines so that
``make test`` runs each demo once. Every number checked comes from the demo's final table, which the
demo reads from the databases.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.helpers.processes import REPO_ROOT, spawn_manage
from tests.helpers.services import require, service_url

ENGINE = os.environ.get("ECOTONE_TEST_DB", "sqlite")
TENANTS = {"acme": "default", "globex": "default", "initech": "default", "big_corp": "big_corp"}
TENANTS["enterprise_x"] = "enterprise_x"
CHANNEL = {"acme": "orders_shared", "globex": "orders_shared", "initech": "orders_shared"}
CHANNEL |= {"big_corp": "orders_premium", "enterprise_x": "orders_premium"}

# Everything the example's settings read from the environment, so that the caller's shell cannot leak in.
EXAMPLE_VARIABLES = (
    "DEBUG",
    "SHOP_ALLOW_TENANT_HEADER",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "BIG_CORP_DATABASE_URL",
    "ENTERPRISE_X_DATABASE_URL",
    "CELERY_BROKER_URL",
    "ORDERS_PREMIUM_QUEUE",
    "ECOTONE_DEMO_TIME_SCALE",
    "ECOTONE_DEMO_VAR_DIR",
    "ECOTONE_POLL_INTERVAL",
    "ECOTONE_RELAY_INTERVAL",
    "ECOTONE_CLAIM_LEASE",
    "SHOP_UNPAID_RATE",
    "SHOP_LATE_PAYMENT_RATE",
    "SHOP_SHIPMENT_FAILURE_RATE",
)


def example_env(var_dir: Path, **overrides: str) -> dict[str, str | None]:
    env: dict[str, str | None] = dict.fromkeys(EXAMPLE_VARIABLES)
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        ECOTONE_DEMO_VAR_DIR=str(var_dir),
        # Enough never-paid, late-paid and unshippable orders that the timeout, the refund of a late
        # payment and the compensation paths surely run (the fates are fixed by the order ids).
        SHOP_UNPAID_RATE="0.2",
        SHOP_LATE_PAYMENT_RATE="0.15",
        SHOP_SHIPMENT_FAILURE_RATE="0.2",
    )
    env.update(overrides)
    return env


def parse_table(output: str) -> dict[str, dict[str, str]]:
    """The demo's final table: one dict per row (tenants and ALL), keyed by the column names."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["tenant", "database", "channel"])
    names = lines[start].split()
    rows: dict[str, dict[str, str]] = {}
    for line in lines[start + 2 :]:
        if line.startswith("-"):
            continue
        values = line.split()
        if not values or values[0] in rows:
            break
        if values[0] == "ALL":  # no database or channel
            rows["ALL"] = dict(zip([n for n in names if n not in ("database", "channel")], values, strict=True))
            break
        rows[values[0]] = dict(zip(names, values, strict=True))
    return rows


def run_demo(env: dict[str, str | None], orders: int, timeout: float) -> dict[str, dict[str, str]]:
    args = ["--orders", str(orders), "--rate", "50", "--payment-timeout", "3", "--timeout", str(timeout - 15)]
    with spawn_manage("demo", *args, env=env) as demo:
        code = demo.wait(timeout=timeout)
        output = demo.output()
    assert code == 0, f"demo exited with {code}:\n{output[-6000:]}"
    assert "SIGKILL worker" in output, output[-3000:]
    assert "demo OK" in output, output[-3000:]
    # GET /orders/<id> through the view, for an order of each final stage.
    for stage in ("completed", "cancelled", "refunded"):
        assert f'"stage": "{stage}"' in output, output[-3000:]
    rows = parse_table(output)
    assert set(rows) == {*TENANTS, "ALL"}, output[-3000:]
    for tenant, row in rows.items():
        settled = int(row["completed"]) + int(row["cancelled"]) + int(row["refunded"])
        assert (row["lost"], row["doubled"], settled) == ("0", "0", int(row["placed"])), (tenant, row)
        if tenant != "ALL":
            assert (row["database"], row["channel"]) == (TENANTS[tenant], CHANNEL[tenant]), (tenant, row)
    assert int(rows["ALL"]["placed"]) == orders
    # The payment timeout cancelled orders, late payments were refunded, failed shipments compensated.
    assert int(rows["ALL"]["cancelled"]) > 0 and int(rows["ALL"]["refunded"]) > 0, rows["ALL"]
    late = re.search(r"late payments refunded \(counted as cancelled\): (\d+)", output)
    assert late and int(late.group(1)) > 0, output[-3000:]
    return rows


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.skipif(ENGINE != "sqlite", reason="the embedded (SQLite) demo runs once, under ECOTONE_TEST_DB=sqlite")
def test_demo_on_sqlite_with_database_channels(tmp_path: Path) -> None:
    run_demo(example_env(tmp_path), orders=40, timeout=60)
    files = {p.name for p in tmp_path.glob("*.sqlite3")}
    assert files == {"shared.sqlite3", "big_corp.sqlite3", "enterprise_x.sqlite3"}, files


@pytest.fixture
def postgres_databases() -> Iterator[dict[str, str]]:
    """Three fresh PostgreSQL databases (URLs by the example's variable names), dropped afterwards."""
    import psycopg

    require("postgres")
    base = service_url("postgres")
    run = uuid.uuid4().hex[:10]
    names = {
        "DATABASE_URL": f"ecotone_demo_{run}_shared",
        "BIG_CORP_DATABASE_URL": f"ecotone_demo_{run}_big_corp",
        "ENTERPRISE_X_DATABASE_URL": f"ecotone_demo_{run}_enterprise_x",
    }
    with psycopg.connect(base, autocommit=True) as conn:
        for name in names.values():
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {variable: urlunsplit(urlsplit(base)._replace(path=f"/{name}")) for variable, name in names.items()}
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            for name in names.values():
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def premium_queue() -> Iterator[tuple[str, str]]:
    """(broker URL, a queue name of our own), deleted afterwards."""
    from kombu import Connection

    require("rabbitmq")
    url = service_url("rabbitmq")
    queue = f"ecotone_demo_{uuid.uuid4().hex[:10]}"
    try:
        yield url, queue
    finally:
        with Connection(url) as conn:
            channel = conn.default_channel
            channel.queue_delete(queue)
            channel.exchange_delete(queue)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.rabbitmq
@pytest.mark.timeout(120)
@pytest.mark.skipif(ENGINE != "postgres", reason="the PostgreSQL + RabbitMQ demo runs under ECOTONE_TEST_DB=postgres")
def test_demo_on_postgres_with_rabbitmq_premium_channel(
    tmp_path: Path, postgres_databases: dict[str, str], premium_queue: tuple[str, str]
) -> None:
    broker, queue = premium_queue
    env = example_env(tmp_path, **postgres_databases, CELERY_BROKER_URL=broker, ORDERS_PREMIUM_QUEUE=queue)
    run_demo(env, orders=40, timeout=90)
    assert not list(tmp_path.glob("*.sqlite3")), "no database may fall back to SQLite when the URLs are set"


@pytest.mark.skipif(ENGINE != "sqlite", reason="runs once, under ECOTONE_TEST_DB=sqlite")
def test_views(tmp_path: Path) -> None:
    """``POST /orders`` and ``GET /orders/<id>`` with Django's test client, inside the example's settings."""
    env = {k: v for k, v in os.environ.items() if k not in EXAMPLE_VARIABLES}
    env |= {"DJANGO_SETTINGS_MODULE": "example_project.settings", "ECOTONE_DEMO_VAR_DIR": str(tmp_path)}
    env |= {"SHOP_UNPAID_RATE": "0", "SHOP_LATE_PAYMENT_RATE": "0", "SHOP_SHIPMENT_FAILURE_RATE": "0"}
    env |= {"DEBUG": "1", "SHOP_ALLOW_TENANT_HEADER": "1"}  # the X-Tenant checks: local use
    result = subprocess.run(
        [sys.executable, "-m", "tests.example.views_scenario"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "every view check passed" in result.stdout, result.stdout[-4000:]


def _example_settings(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """Load the example's settings in a clean environment (plus ``variables``); print DEBUG and the header switch."""
    env = {k: v for k, v in os.environ.items() if k not in EXAMPLE_VARIABLES}
    env |= {"DJANGO_SETTINGS_MODULE": "example_project.settings", "ECOTONE_DEMO_VAR_DIR": str(tmp_path), **variables}
    code = "from django.conf import settings; print(settings.DEBUG, settings.SHOP_ALLOW_TENANT_HEADER)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(ENGINE != "sqlite", reason="runs once, under ECOTONE_TEST_DB=sqlite")
def test_the_example_is_secure_by_default(tmp_path: Path) -> None:
    """DEBUG off and no X-Tenant header unless asked for; the header only together with DEBUG (local use)."""
    assert _example_settings(tmp_path).stdout.split() == ["False", "False"]
    assert _example_settings(tmp_path, DEBUG="1").stdout.split() == ["True", "False"]
    local = _example_settings(tmp_path, DEBUG="1", SHOP_ALLOW_TENANT_HEADER="1")
    assert local.stdout.split() == ["True", "True"], local.stderr[-2000:]
    refused = _example_settings(tmp_path, SHOP_ALLOW_TENANT_HEADER="1")
    assert refused.returncode != 0 and "needs DEBUG=1" in refused.stderr, refused.stderr[-2000:]
