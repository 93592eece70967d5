"""Path normalisation: one canonical path, or a 400 — never a path that means two things."""

import pytest

from bastion.http import BadPath, normalise_path

CANONICAL = [
    (b"/", "/"),
    (b"/users/1", "/users/1"),
    (b"/%61dmin", "/admin"),  # unreserved escapes are decoded
    (b"/%41DMIN", "/ADMIN"),
    (b"//admin", "/admin"),  # empty segments collapse
    (b"///admin//x", "/admin/x"),
    (b"/admin/.", "/admin/"),
    (b"/admin/./x", "/admin/x"),
    (b"/x/../admin", "/admin"),
    (b"/x/%2e%2e/admin", "/admin"),  # encoded dot segments resolve like plain ones
    (b"/x/%2E./admin", "/admin"),
    (b"/admin;x", "/admin"),  # matrix params are stripped
    (b"/admin;jsessionid=1/x;a=b", "/admin/x"),
    (b"/a/%252e%252e/b", "/a/%252e%252e/b"),  # double encoding stays inert
    (b"/caf%c3%a9", "/caf%C3%A9"),  # other escapes kept, hex upper-cased
    (b"/caf\xc3\xa9", "/caf%C3%A9"),  # raw UTF-8 is forwarded encoded
    (b"/a b", "/a b"),
    (b"/users/", "/users/"),
    (b"/x/..", "/"),
]


@pytest.mark.parametrize("raw,expected", CANONICAL)
def test_canonical_form(raw, expected):
    assert normalise_path(raw) == expected


REFUSED = [
    (b"/admin%2fx", "encoded '/'"),
    (b"/admin%2Fx", "encoded '/'"),
    (b"/admin%5cx", "'\\'"),
    (b"/admin\\x", "'\\'"),
    (b"/admin%00", "NUL"),
    (b"/admin\x00", "NUL"),
    (b"/..", "above the root"),
    (b"/a/../../etc/passwd", "above the root"),
    (b"/%2e%2e/x", "above the root"),
    (b"/bad%c3", "UTF-8"),
    (b"/bad%ff%fe", "UTF-8"),
    (b"/bad\xff", "UTF-8"),
    (b"/x%zz", "invalid percent-escape"),
    (b"/x%4", "truncated"),
    (b"admin", "start with '/'"),
    (b"*", "absolute path"),
]


@pytest.mark.parametrize("raw,why", REFUSED)
def test_refused(raw, why):
    with pytest.raises(BadPath, match=None) as exc:
        normalise_path(raw)
    assert why.lower() in str(exc.value).lower()


def test_normalisation_is_idempotent():
    for raw, _ in CANONICAL:
        once = normalise_path(raw)
        assert normalise_path(once.encode("latin-1")) == once
