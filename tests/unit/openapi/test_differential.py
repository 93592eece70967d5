"""bastion's request checks judged against openapi-core's on the same requests.

Both get the petstore spec (OpenAPI 3.0) and ~600 generated requests (valid and broken
parameters and bodies). bastion's own additions are switched off for the comparison and listed
here as the deliberate differences:
- unknown body properties: bastion refuses them by default (mass assignment, OWASP API3);
  openapi-core accepts what the schema allows. Compared with `close_objects=False`, and checked
  separately below;
- integers in non-canonical spellings ("07", "+5"): openapi-core reads 7 and 5, bastion refuses them — a backend
  may read them as octal (or as a string), and a value the gateway and the backend read
  differently is how checks get bypassed. Checked separately below;
- limits on depth / array / string sizes the schema does not state: not reached by these cases.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest

from bastion.openapi.operations import compile_operations
from bastion.openapi.spec import load_spec

SPEC = Path(__file__).resolve().parents[2] / "specs" / "petstore.yaml"
HOST = "https://api.example.com"
KEY = {"X-API-Key": "k"}

LIMITS = [None, "1", "0", "100", "101", "abc", "1.5", "-3", "", "2147483648", "50", "1e2"]
TAGS = [None, "a", "a,b", "a,b,c,d,e", "a,b,c,d,e,f", "x" * 21, "ok," + "y" * 21]
TRACES = [None, "deadbeef", "DEADBEEF", "xyz", "deadbeef0"]
NAMES = ["rex", "", "r" * 50, "r" * 51, 5, None, ["rex"]]
TAGVALUES = ["t", None, "t" * 21, 3]
AGES = [1, 0, -1, 40, 41, 2.5, "3", True]
EMAILS = ["bob@example.com", "not-an-email", 5]
PET_IDS = ["1", "0", "-1", "abc", "9223372036854775807", "9223372036854775808", "1.0"]


def cases(seed: int = 7, n: int = 600):
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rnd.choice(["list", "create", "show", "replace", "session"])
        if kind == "list":
            args = {}
            headers = dict(KEY)
            if (v := rnd.choice(LIMITS)) is not None:
                args["limit"] = v
            if (v := rnd.choice(TAGS)) is not None:
                args["tags"] = v
            if (v := rnd.choice(TRACES)) is not None:
                headers["X-Trace"] = v
            out.append(("GET", "/pets", "/v1/pets", {}, args, headers, {}, None))
        elif kind in ("create", "replace"):
            body: dict = {}
            for field, pool in (("name", NAMES), ("tag", TAGVALUES), ("age", AGES), ("owner_email", EMAILS)):
                if rnd.random() < (0.9 if field == "name" else 0.5):
                    body[field] = rnd.choice(pool)
            if kind == "replace" and rnd.random() < 0.3:
                body["id"] = 4  # readOnly
            raw = json.dumps(body).encode() if rnd.random() > 0.05 else b'{"name": '
            if kind == "create":
                out.append(("POST", "/pets", "/v1/pets", {}, {}, dict(KEY), {}, raw))
            else:
                out.append(("PUT", "/pets/{petId}", "/v1/pets/5", {"petId": "5"}, {}, dict(KEY), {}, raw))
        elif kind == "show":
            pid = rnd.choice(PET_IDS)
            out.append(("GET", "/pets/{petId}", f"/v1/pets/{pid}", {"petId": pid}, {}, dict(KEY), {}, None))
        else:
            sid = rnd.choice([None, "short", "long-enough-id"])
            cookies = {} if sid is None else {"sid": sid}
            out.append(("GET", "/session", "/v1/session", {}, {}, {}, cookies, None))
    return out


@pytest.fixture(scope="module")
def judges():
    core = OpenAPI.from_file_path(str(SPEC))
    ops = compile_operations(load_spec(SPEC), close_objects=False)
    return core, ops


def core_valid(core, method, path, view_args, args, headers, cookies, body) -> bool:
    req = MockRequest(
        HOST,
        method.lower(),
        path,
        view_args=view_args,
        args=args,
        headers=headers,
        cookies=cookies,
        data=body,
        content_type="application/json",
    )
    return not list(core.iter_request_errors(req))


def bastion_valid(ops, method, template, view_args, args, headers, cookies, body) -> bool:
    from urllib.parse import urlencode

    op = ops[f"{method} {template}"]
    status, _, _ = op.check_request(
        path_params=view_args,
        query=urlencode(args),
        headers={k.lower(): v for k, v in headers.items()},
        cookies=cookies,
        content_type="application/json" if body is not None else None,
        body=body,
    )
    return status == 0


def test_same_verdicts_as_openapi_core(judges):
    core, ops = judges
    disagreements = []
    verdicts = {True: 0, False: 0}
    for method, template, path, view_args, args, headers, cookies, body in cases():
        ours = bastion_valid(ops, method, template, view_args, args, headers, cookies, body)
        theirs = core_valid(core, method, path, view_args, args, headers, cookies, body)
        verdicts[ours] += 1
        if ours != theirs:
            disagreements.append((method, path, args, headers, cookies, body, ours, theirs))
    # the generator must exercise both answers, or the comparison proves nothing
    assert verdicts[True] > 100 and verdicts[False] > 100, verdicts
    assert not disagreements, disagreements[:10]


def test_deliberate_difference_leading_zeros(judges):
    core, ops = judges
    for spelling in ("07", "+5"):
        assert core_valid(core, "GET", "/v1/pets", {}, {"limit": spelling}, dict(KEY), {}, None)
        assert not bastion_valid(ops, "GET", "/pets", {}, {"limit": spelling}, dict(KEY), {}, None)


def test_deliberate_difference_unknown_properties(judges):
    core, _ = judges
    closed = compile_operations(load_spec(SPEC))
    body = b'{"name": "rex", "is_admin": true}'
    assert core_valid(core, "POST", "/v1/pets", {}, {}, dict(KEY), {}, body)  # openapi-core: fine
    assert not bastion_valid(closed, "POST", "/pets", {}, {}, dict(KEY), {}, body)  # bastion: refused


# --------------------------------------------------------------- OpenAPI 3.1, refs across files
SHOP = SPEC.parent / "shop" / "openapi.yaml"
STATUSES = [None, "open", "shipped", "lost", ""]
TOTALS = [None, "5", "0", "-1", "x", "2.5"]
PAYMENTS = [
    {"kind": "card", "number": "4111111111111111"},
    {"kind": "card", "number": "41"},
    {"kind": "transfer", "iban": "DE00"},
    {"kind": "transfer", "iban": "D" * 35},
    {"kind": "cash"},
    {"kind": "card"},
    "card",
    None,
]
MONEY = [
    {"amount": 10, "currency": "EUR"},
    {"amount": -1, "currency": "EUR"},
    {"amount": 1, "currency": "GBP"},
    {"amount": 1},
    10,
]
NOTES = ["gift", None, 5, "n" * 201]


def shop_cases(seed: int = 11, n: int = 400):
    rnd = random.Random(seed)
    for _ in range(n):
        if rnd.random() < 0.4:
            args = {}
            if (s := rnd.choice(STATUSES)) is not None:
                args["filter[status]"] = s
            if (t := rnd.choice(TOTALS)) is not None:
                args["filter[min_total]"] = t
            yield ("GET", "/orders", args, None)
        else:
            doc = {
                "item": rnd.choice(["book", "", "b" * 101]),
                "email": rnd.choice(["a@b.co", "nope"]),
                "total": rnd.choice(MONEY),
                "payment": rnd.choice(PAYMENTS),
            }
            if rnd.random() < 0.5:
                doc["note"] = rnd.choice(NOTES)
            for key in list(doc):
                if rnd.random() < 0.08:
                    del doc[key]
            yield ("POST", "/orders", {}, json.dumps(doc).encode())


def test_same_verdicts_on_a_31_spec_with_file_refs():
    from urllib.parse import urlencode

    core = OpenAPI.from_file_path(str(SHOP))
    ops = compile_operations(load_spec(SHOP), close_objects=False)
    verdicts = {True: 0, False: 0}
    disagreements = []
    for method, template, args, body in shop_cases():
        req = MockRequest(
            "http://h",
            method.lower(),
            "/api" + template,
            args=args,
            headers={"Authorization": "Bearer x"},
            data=body,
            content_type="application/json",
        )
        theirs = not list(core.iter_request_errors(req))
        status, _, _ = ops[f"{method} {template}"].check_request(
            path_params={},
            query=urlencode(args),
            headers={},
            cookies={},
            content_type="application/json" if body else None,
            body=body,
        )
        ours = status == 0
        verdicts[ours] += 1
        if ours != theirs:
            disagreements.append((method, args, body, ours, theirs))
    assert verdicts[True] > 40 and verdicts[False] > 40, verdicts
    assert not disagreements, disagreements[:10]
