"""Signed broker messages: what is signed, what verifies, and the system check for bad SIGNING settings."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import override_settings

from ecotone_django.channels.celery.protocol import read_task, task_message
from ecotone_django.checks import check_ecotone
from ecotone_django.exceptions import BadSignatureError
from ecotone_django.messages import Envelope
from ecotone_django.models import OutboxMessage
from ecotone_django.signing import KEY_ID_HEADER, SIGNATURE_HEADER, Keyring, Signed, get_keyring, parse_signing
from tests.settings import ECOTONE

K1 = {"KEYS": {"k1": "first secret"}, "CURRENT": "k1"}
ROTATED = {"KEYS": {"k2": "second secret", "k1": "first secret"}, "CURRENT": "k2"}


def signed_setting(signing: Any) -> Any:
    return override_settings(ECOTONE={**ECOTONE, "SIGNING": signing})


def row(tenant: str = "big_corp") -> OutboxMessage:
    envelope = Envelope("tests.Pay", {"amount": 3}, {"tenant": tenant})
    return OutboxMessage(
        message_id=envelope.id,
        channel="rabbit",
        handler="tests.pay",
        message_type=envelope.type,
        tenant=tenant,
        body=envelope.encode(),
        attempts=0,
    )


def delivered(headers: dict[str, Any], body: str) -> Any:
    """What the consumer reads of a broker message (kombu's Message has these attributes)."""
    return SimpleNamespace(headers=headers, content_type="application/json", body=body.encode())


def test_without_signing_nothing_is_signed_or_checked() -> None:
    headers, body = task_message(row())
    assert KEY_ID_HEADER not in headers and SIGNATURE_HEADER not in headers
    delivery = read_task(delivered(headers, body), "rabbit")
    assert delivery.error is None and delivery.envelope is not None


def test_a_signed_message_verifies_and_names_its_key() -> None:
    with signed_setting(K1):
        headers, body = task_message(row())
        delivery = read_task(delivered(headers, body), "rabbit")
    assert headers[KEY_ID_HEADER] == "k1" and len(headers[SIGNATURE_HEADER]) == 64
    assert delivery.error is None
    assert delivery.envelope is not None and delivery.envelope.header("tenant") == "big_corp"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda h, args: h.pop(SIGNATURE_HEADER), id="signature missing"),
        pytest.param(lambda h, args: h.update({KEY_ID_HEADER: "k9"}), id="unknown key id"),
        pytest.param(lambda h, args: h.update({SIGNATURE_HEADER: "0" * 64}), id="wrong signature"),
        pytest.param(
            lambda h, args: args.__setitem__(0, args[0].replace("big_corp", "enterprise_x")), id="tenant changed"
        ),
        pytest.param(lambda h, args: args.__setitem__(1, "tests.other_handler"), id="handler changed"),
        pytest.param(lambda h, args: args.__setitem__(3, 5), id="attempts changed"),
    ],
)
def test_a_tampered_or_unsigned_message_is_refused_with_a_bad_signature(tamper: Any) -> None:
    with signed_setting(K1):
        headers, body = task_message(row())
        decoded = json.loads(body)
        tamper(headers, decoded[0])
        delivery = read_task(delivered(headers, json.dumps(decoded)), "rabbit")
    assert isinstance(delivery.error, BadSignatureError)
    assert str(delivery.error).startswith("bad signature")
    assert delivery.envelope is None  # nothing downstream can read the tenant it claims


def test_old_key_ids_keep_verifying_until_removed() -> None:
    with signed_setting(K1):
        old = task_message(row())
    with signed_setting(ROTATED):
        new = task_message(row())
        assert new[0][KEY_ID_HEADER] == "k2"
        assert read_task(delivered(*old), "rabbit").error is None
        assert read_task(delivered(*new), "rabbit").error is None
    with signed_setting({"KEYS": {"k2": "second secret"}, "CURRENT": "k2"}):
        error = read_task(delivered(*old), "rabbit").error
    assert isinstance(error, BadSignatureError) and "unknown key id 'k1'" in str(error)


def test_the_signature_covers_every_field() -> None:
    keyring = Keyring({"k1": b"s"}, "k1")
    base = Signed("{}", "id", "type", "t", "h", "c", 0)
    headers = keyring.sign(base)
    for changed in [
        Signed("{ }", "id", "type", "t", "h", "c", 0),
        Signed("{}", "id2", "type", "t", "h", "c", 0),
        Signed("{}", "id", "type2", "t", "h", "c", 0),
        Signed("{}", "id", "type", "", "h", "c", 0),
        Signed("{}", "id", "type", "t", "h", "c2", 0),
        Signed("{}", "idt", "ype", "t", "h", "c", 0),  # fields are length-prefixed: no shifting across them
    ]:
        with pytest.raises(BadSignatureError):
            keyring.verify(headers, changed)
    keyring.verify(headers, base)


def test_the_keyring_follows_the_setting() -> None:
    assert get_keyring() is None
    with signed_setting(K1):
        keyring = get_keyring()
        assert keyring is not None and keyring.current == "k1" and keyring.keys["k1"] == b"first secret"
    assert get_keyring() is None


@pytest.mark.parametrize(
    ("signing", "says"),
    [
        ({"KEYS": {"k1": ""}, "CURRENT": "k1"}, "is empty"),
        ({"KEYS": {"k1": "s"}, "CURRENT": "k2"}, "not a key id of KEYS"),
        ({"KEYS": {}, "CURRENT": "k1"}, "non-empty dict"),
        ({"KEYS": ["s"], "CURRENT": "k1"}, "non-empty dict"),
        ({"KEYS": {"k1": 5}, "CURRENT": "k1"}, "is empty; a secret is a non-empty string"),
        ({"KEYS": {"k1": "s"}}, "CURRENT"),
        ({"KEYS": {"k1": "s"}, "CURRENT": "k1", "CURENT": "k1"}, "did you mean 'CURRENT'"),
        ("k1:secret", "must be a dict"),
    ],
)
def test_bad_signing_settings_are_system_check_errors(signing: Any, says: str) -> None:
    with signed_setting(signing):
        errors = check_ecotone()
    assert [e.id for e in errors] == ["ecotone.E020"], errors
    assert says in errors[0].msg


def test_good_signing_settings_pass_the_checks() -> None:
    with signed_setting(ROTATED):
        assert check_ecotone() == []
    assert parse_signing(None) is None
