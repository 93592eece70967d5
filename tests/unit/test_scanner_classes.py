"""The pure parts of the session-5 scanner classes: which operations a check picks, what it
derives from a spec, and the secrets it can crack. The behaviour against real servers is in
tests/integration/scanner/test_real_targets.py (loyalty_fastapi and its fixed twin)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import jwt
import pytest

from bastion.scanner.checks.api2 import _recovery_ops
from bastion.scanner.checks.api3 import _role_values
from bastion.scanner.checks.api6 import _fits, _like
from bastion.scanner.checks.api9 import _words
from bastion.scanner.model import Operation
from bastion.scanner.secrets_list import crack, numeric


def body(*names: str) -> dict:
    return {"type": "object", "properties": {n: {"type": "string"} for n in names}}


def test_a_pin_like_secret_is_cracked_and_a_longer_one_is_not():
    token = jwt.encode({"sub": "1"}, "0042", algorithm="HS256")
    assert crack(token)[0] == "0042"
    assert list(numeric(2))[:3] == [b"0", b"1", b"2"] and b"00" in set(numeric(2)) and len(list(numeric(2))) == 110


@pytest.mark.parametrize(
    ("current", "expected"),
    [("Customer", "Admin"), ("member", "admin"), ("USER", "ADMIN"), (False, True)],
)
def test_role_values_are_written_like_the_current_one(current, expected):
    assert expected in _role_values(current)
    assert current not in _role_values(current)


def test_the_recovery_pair_is_told_apart_from_login_and_registration():
    ops = [
        Operation("POST", "/auth/login", [], body("username", "password"), False),
        Operation("POST", "/auth/register", [], body("username", "email", "password"), False),
        Operation("POST", "/password/forgot", [], body("email"), False),
        Operation("POST", "/password/reset", [], body("email", "resetPasswordCode", "newPassword"), False),
    ]
    request, confirm = _recovery_ops(SimpleNamespace(ops=ops))
    assert request == (ops[2], "email")
    assert confirm is not None and confirm[0] is ops[3] and confirm[2] == "resetPasswordCode"
    # without a recovery path nothing is picked: a login is not a "send me a code"
    assert _recovery_ops(SimpleNamespace(ops=ops[:2])) == (None, None)


def test_a_code_is_looked_for_under_fitting_keys_and_faked_in_its_shape():
    assert _fits("referral_code", "code") and _fits("invite_code", "invite_code") and _fits("coupon", "promo_code")
    assert not _fits("invite_code", "username") and not _fits("code", "")
    fake = _like("AB12CD34")
    assert fake != "AB12CD34" and re.fullmatch(r"[A-Z0-9]{8}", fake)
    assert re.fullmatch(r"[a-z]{6}", _like("abcdef"))


def test_schema_words_follow_refs_and_split_names():
    spec = {
        "components": {
            "schemas": {
                "Order": {
                    "type": "object",
                    "properties": {"deliveryAddress": {"type": "string"}, "pickup_shop": {"type": "string"}},
                }
            }
        }
    }
    words = _words({"type": "array", "items": {"$ref": "#/components/schemas/Order"}}, spec)
    assert words[:2] == ["delivery", "address"] and "pickup" in words and "shop" not in words  # 5 letters minimum
