"""The saga admin of the example shop, seen in a real browser.

``manage.py demo`` places orders into a fresh set of SQLite databases (it migrates every alias:
default, big_corp, enterprise_x) with real worker processes; then ``manage.py runserver`` serves the
example under ``tests.example.screenshot_settings`` (the example's settings plus a test-only login
door, see there) and headless Chromium takes screenshots of the saga changelist and of one saga's
detail page. The same URLs, fetched with the same login through urllib, must be the pages we meant:
the saga list of the default database with its database chooser and the sagas of the orders the demo
placed there; a refunded order's saga with its state and its handled-message history.

Runs under ``ECOTONE_TEST_DB=sqlite`` only. Without Chromium it is skipped locally and fails under
``CI=true`` (``.ci/services.sh`` installs Debian's ``chromium``). ``ECOTONE_UPDATE_SCREENSHOTS=1``
also copies the PNGs to ``docs/images/`` for the README.
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import time
import zlib
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import HTTPCookieProcessor, OpenerDirector, ProxyHandler, build_opener

import pytest

from tests.example.test_demo import TENANTS, example_env, parse_table
from tests.helpers.processes import REPO_ROOT, ManagedProcess, spawn_manage, wait_for
from tests.helpers.services import in_ci

ENGINE = os.environ.get("ECOTONE_TEST_DB", "sqlite")
UPDATE_SCREENSHOTS = os.environ.get("ECOTONE_UPDATE_SCREENSHOTS") == "1"
DOCS_IMAGES = REPO_ROOT / "docs" / "images"

ORDERS = 20  # seed 7: about 16 land on the shared database, and every final stage occurs
LIST_WINDOW = (1600, 1000)  # wide enough for every column of the changelist
DETAIL_WINDOW = (1600, 1200)  # tall enough for the state and the whole history of a refunded order
CHANGELIST = "/admin/ecotone_django/sagastate/"
USERNAME = "screenshot-admin"
# = tests.example.screenshot_settings.LOGIN_PARAM (not imported: that settings module needs its token to load)
LOGIN_PARAM = "screenshot_login"

# Flags without which headless Chromium does not run as root or keeps calling the (closed) network.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--hide-scrollbars",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SAMPLE = re.compile(r"^GET /orders/(?P<order_id>\S+) as (?P<tenant>\S+) → 200\n  (?P<json>\{.*\})$", re.M)


def chromium() -> str:
    """Path of headless Chromium: skip without it locally, fail under CI."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    where = "chromium is not installed (apt-get install chromium)"
    if in_ci():
        pytest.fail(f"{where}; CI requires it (`make services` installs it)", pytrace=False)
    pytest.skip(f"{where}; `make services` installs it")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a well-formed PNG: signature, IHDR first, every chunk's CRC right, IEND last."""
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
    offset, chunks = len(PNG_SIGNATURE), []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path}: bad CRC in chunk {kind!r}"
        chunks.append(kind)
        offset += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks, chunks
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def screenshot(browser: str, url: str, path: Path, window: tuple[int, int], profile: Path) -> None:
    """Headless Chromium with a fresh profile renders ``url`` into the PNG ``path``."""
    args = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}"]
    result = subprocess.run(
        [*args, f"--screenshot={path}", url], capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, f"chromium exited with {result.returncode}:\n{result.stderr[-4000:]}"
    wait_for(lambda: path.exists() and path.stat().st_size > 0, timeout=10, message=f"the screenshot {path}")
    assert png_size(path) == window, (png_size(path), window)
    # A blank or error page compresses to a few kilobytes; an admin page full of text does not.
    assert path.stat().st_size > 30_000, f"{path} is suspiciously small ({path.stat().st_size} bytes)"


def signed_in(base: str, token: str) -> OpenerDirector:
    """A urllib opener signed in the way Chromium is: through the test settings' login parameter."""
    opener = build_opener(ProxyHandler({}), HTTPCookieProcessor(CookieJar()))
    with opener.open(f"{base}{CHANGELIST}?{urlencode({LOGIN_PARAM: token})}", timeout=10) as response:
        assert response.status == 200 and response.url == f"{base}{CHANGELIST}", response.url
    return opener


def assert_closed_without_token(base: str) -> None:
    """Anonymous requests go to the login page; a wrong token is refused."""
    anonymous = build_opener(ProxyHandler({}), HTTPCookieProcessor(CookieJar()))
    with anonymous.open(f"{base}{CHANGELIST}", timeout=10) as response:
        assert response.url.startswith(f"{base}/admin/login/"), response.url
    with pytest.raises(HTTPError) as refused:
        anonymous.open(f"{base}{CHANGELIST}?{urlencode({LOGIN_PARAM: 'x' * 43})}", timeout=10)
    refused.value.close()
    assert refused.value.code == 403


def page(opener: OpenerDirector, url: str) -> str:
    with opener.open(url, timeout=10) as response:
        assert response.status == 200 and response.url == url, (response.status, response.url)
        text: str = response.read().decode()
    assert "Log out" in text or "log out" in text.lower(), f"not signed in at {url}"
    return text


def answering(base: str, server: ManagedProcess) -> bool:
    assert server.is_running(), f"runserver exited:\n{server.output_tail()}"
    try:
        with build_opener(ProxyHandler({})).open(f"{base}/admin/login/", timeout=2) as response:
            return bool(response.status == 200)
    except (URLError, ConnectionError):
        return False


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(ENGINE != "sqlite", reason="the example's embedded (SQLite) admin is shot once, under sqlite")
def test_saga_admin_screenshots(tmp_path: Path) -> None:
    browser = chromium()
    started = time.monotonic()
    var_dir = tmp_path / "var"
    env = example_env(var_dir)

    # 1. Orders through the example, with its own settings and workers: sagas in every database.
    with spawn_manage(
        "demo", "--orders", str(ORDERS), "--rate", "50", "--payment-timeout", "2", "--timeout", "90", env=env
    ) as demo:
        code = demo.wait(timeout=120)
        output = demo.output()
    assert code == 0 and "demo OK" in output, output[-4000:]
    assert {p.name for p in var_dir.glob("*.sqlite3")} == {"shared.sqlite3", "big_corp.sqlite3", "enterprise_x.sqlite3"}
    rows = parse_table(output)
    on_default = sum(int(row["placed"]) for tenant, row in rows.items() if TENANTS.get(tenant) == "default")
    samples = {json.loads(m["json"])["stage"]: (m["order_id"], m["tenant"]) for m in SAMPLE.finditer(output)}
    assert set(samples) == {"completed", "cancelled", "refunded"}, output[-4000:]
    listed = [order_id for order_id, tenant in samples.values() if TENANTS[tenant] == "default"]
    assert listed and on_default > 0, (samples, rows)

    # 2. The example served under the screenshot settings, a superuser without a password to sign in as.
    token = secrets.token_urlsafe(32)
    server_env = env | {
        "DJANGO_SETTINGS_MODULE": "tests.example.screenshot_settings",
        "ECOTONE_SCREENSHOT_TOKEN": token,
        "ECOTONE_SCREENSHOT_USER": USERNAME,
        "DEBUG": "true",  # runserver serves the admin's CSS
    }
    with spawn_manage(
        "createsuperuser", "--noinput", "--username", USERNAME, "--email", "a@example.com", env=server_env
    ) as su:
        assert su.wait(timeout=60) == 0, su.output_tail()
    base = f"http://127.0.0.1:{free_port()}"
    with spawn_manage("runserver", base.removeprefix("http://"), "--noreload", env=server_env) as server:
        wait_for(lambda: answering(base, server), timeout=60, message="runserver answering")
        assert_closed_without_token(base)
        opener = signed_in(base, token)

        # 3. The changelist: the saga list of the default database, with the chooser of every database.
        changelist = page(opener, f"{base}{CHANGELIST}")
        text = html.unescape(changelist)
        assert "Select saga to view" in text and "Database: default" in text, text[:3000]
        for alias in ("default", "big_corp", "enterprise_x"):
            assert f'href="?db={alias}"' in changelist, f"database chooser lacks {alias}"
        for order_id in listed:
            assert f'<td class="field-saga_id">{order_id}</td>' in changelist, order_id
        assert re.search(rf"\b{on_default} sagas\b", text), (on_default, re.findall(r"\d+ sagas?", text))
        list_png = tmp_path / "saga-admin.png"
        login = urlencode({LOGIN_PARAM: token})
        screenshot(browser, f"{base}{CHANGELIST}?{login}", list_png, LIST_WINDOW, tmp_path / "profile-list")

        # 4. A refunded order's saga: state as JSON and the history of the messages it handled.
        order_id, tenant = samples["refunded"]
        alias = TENANTS[tenant]
        search = page(opener, f"{base}{CHANGELIST}?{urlencode({'db': alias, 'q': order_id})}")
        pks = set(re.findall(r'href="/admin/ecotone_django/sagastate/(\d+)/change/', search))
        assert len(pks) == 1, (order_id, alias, pks)
        detail_path = f"/admin/ecotone_django/sagastate/{pks.pop()}/change/?db={alias}"
        detail = html.unescape(page(opener, f"{base}{detail_path}"))
        assert f"OrderSaga {order_id} (database: {alias})" in detail, detail[:3000]
        assert f'"order_id": "{order_id}"' in detail and '"stage": "refunded"' in detail, detail[:6000]
        history = ("orders.messages.OrderPlaced", "payments.messages.PaymentCaptured")
        history += ("fulfillment.messages.FulfillmentFailed", "payments.messages.PaymentRefunded")
        for message_type in history:
            assert f"<td>example_project.{message_type}</td>" in detail, message_type
        assert "<td>example_project.orders.messaging.OrderSaga.on_fulfillment_failed</td>" in detail
        detail_png = tmp_path / "saga-detail.png"
        screenshot(browser, f"{base}{detail_path}&{login}", detail_png, DETAIL_WINDOW, tmp_path / "profile-detail")

    if UPDATE_SCREENSHOTS:
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(list_png, DOCS_IMAGES / "saga-admin.png")
        shutil.copyfile(detail_png, DOCS_IMAGES / "saga-detail.png")
    print(f"admin screenshots in {time.monotonic() - started:.1f} s: {list_png}, {detail_png}")
