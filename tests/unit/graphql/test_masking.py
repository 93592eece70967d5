"""Masked errors: invariants over generated upstream `errors` entries."""

from __future__ import annotations

import copy

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.graphql.errors import DEFAULT_SAFE_CODES, MaskRules, looks_internal, mask_document

LEAKS = [
    'relation "users" does not exist',
    "SELECT id FROM users WHERE name = 'x'",
    'File "/srv/app/resolvers.py", line 12, in resolve',
    "at com.example.Resolver.get(Resolver.java:42)",
    "at Query.user (/srv/app/src/resolvers.js:42:17)",
    "KeyError: 'missing'",
    "java.lang.NullPointerException",
    "Traceback (most recent call last):",
    "could not open /var/lib/app/data.db",
    "object at 0x7f3a2b1c9d00",
    "UNIQUE constraint failed: users.email",
    "psycopg2.errors.UndefinedTable",
]
CLIENT_MESSAGES = [
    "Cannot query field 'usrs' on type 'Query'.",
    "Variable '$id' of required type 'ID!' was not provided.",
    'Int cannot represent non-integer value: "x"',
    "Unknown argument 'frist' on field 'Query.users'.",
    "Syntax Error: Expected Name, found <EOF>.",
    "You may not read this paste",
]
RULES = MaskRules()


@st.composite
def _errors(draw):
    message = draw(st.sampled_from(LEAKS + CLIENT_MESSAGES))
    if draw(st.booleans()):
        message = draw(st.text(max_size=20)) + " " + message
    err = {"message": message}
    if draw(st.booleans()):
        err["path"] = draw(st.lists(st.sampled_from(["users", "a", 0, 1]), min_size=1, max_size=3))
    if draw(st.booleans()):
        err["locations"] = [{"line": 1, "column": draw(st.integers(1, 50))}]
    ext = {}
    if draw(st.booleans()):
        ext["code"] = draw(st.sampled_from([*DEFAULT_SAFE_CODES, "INTERNAL_SERVER_ERROR", "NOT_FOUND", "X"]))
    if draw(st.booleans()):
        ext["exception"] = {"stacktrace": ["Traceback (most recent call last):", '  File "/app/x.py", line 1']}
    if ext:
        err["extensions"] = ext
    if draw(st.booleans()):
        err["stack"] = "Error: boom\n    at /app/index.js:1:1"
    return err


@settings(max_examples=400, deadline=None)
@given(st.lists(_errors(), min_size=1, max_size=4))
def test_nothing_internal_survives_and_client_errors_do(entries):
    doc = {"data": None, "errors": copy.deepcopy(entries)}
    masked = mask_document(doc, "rid-1", RULES)
    out = orjson.dumps(doc).decode()
    for leak in LEAKS:
        assert leak not in out
    assert "Traceback" not in out and "/app/" not in out and "stack" not in out
    assert len(doc["errors"]) == len(entries)  # one answer entry per upstream entry
    for before, after in zip(entries, doc["errors"], strict=True):
        assert set(after) <= {"message", "locations", "path", "extensions"}
        was_masked = after["message"] == RULES.message
        if was_masked:
            assert after["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "request_id": "rid-1"}
        else:
            assert not looks_internal(after["message"])
            assert set(after.get("extensions", {})) <= RULES.safe_extensions
            code = before.get("extensions", {}).get("code")
            assert "path" not in before or code in RULES.safe_codes  # resolver errors need a safe code
        # a validation-style message without a path is always shown
        if before["message"] in CLIENT_MESSAGES and "path" not in before:
            code = before.get("extensions", {}).get("code")
            if code != "INTERNAL_SERVER_ERROR":
                assert not was_masked, before
    assert len(masked) == sum(1 for e in doc["errors"] if e["message"] == RULES.message)
