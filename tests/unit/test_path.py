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
    (b"/public/..;/admin", "/admin"),  # Tomcat's `..;` is `..` here too: resolved, then routed
    (b"/100%25", "/100%25"),  # a lone encoded '%' is fine
    (b"/v1.2/report.json", "/v1.2/report.json"),
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
    # forms that a more lenient server would read as another path
    (b"/a/%252e%252e/b", "encoded twice"),
    (b"/a/%25%32%65%25%32%65/b", "encoded twice"),
    (b"/admin%253bx", "encoded twice"),
    (b"/admin%3bx", "encoded ';'"),
    (b"/admin%3Fx", "encoded '?'"),
    (b"/admin%23", "encoded '#'"),
    (b"/admin%0d%0aX-Injected:%201", "control character"),
    (b"/admin%09", "control character"),
    (b"/admin%7f", "control character"),
    (b"/admin.", "ends with a dot"),
    (b"/admin..;/", "ends with a dot"),
    (b"/admin%2e", "ends with a dot"),
    (b"/admin%20", "white space"),
    (b"/admin /x", "white space"),
    ("/\uff41dmin".encode(), "read as ASCII"),  # full-width a
    ("/\u212adm".encode(), "read as ASCII"),  # Kelvin sign
    (b"/%c5%bfecret", "read as ASCII"),  # long s: upper() is 'S'
    (b"/%ef%ac%81le", "read as ASCII"),  # the 'fi' ligature
    (b"/a%25u0064min", "encoded twice"),  # IIS %u after a second decoding
    (b"/admin%E2%80%A8", "invisible"),  # line separator
    (b"/admin%C2%85", "invisible"),  # NEL, a C1 control
    (b"/admin%E2%80%8B", "invisible"),  # zero-width space
    (b"/admin%C2%A0", "invisible"),  # no-break space (NFKC would make it a plain space)
    (b"/admin::$DATA", "data stream"),
    (b"/admin::%24INDEX_ALLOCATION/x", "data stream"),
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


# ---- properties over generated paths ---------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bastion.http.paths import _normalise  # noqa: E402

SEGMENT = st.one_of(
    st.sampled_from(
        [
            "",
            ".",
            "..",
            "%2e",
            "%2E%2e",
            "admin",
            "a;b",
            "%61",
            "%2f",
            "%5c",
            "%00",
            "%c3%a9",
            "%ff",
            "x.y",
            "..x",
            "%25",
            "~u",
            "ADMINI~1",  # a Windows short name: refused, never taken as plain
            "a~12.txt",
            "x::$DATA",
            "é",
            "a%20b",
            ";",
            "\\",
        ]
    ),
    st.text(alphabet="abcXYZ019-._~!$&'()*+,=:@%;", min_size=1, max_size=6),
)
PATHS = st.lists(SEGMENT, max_size=8).map(lambda segs: ("/" + "/".join(segs)).encode("utf-8"))


@settings(max_examples=3000, deadline=None)
@given(PATHS)
def test_fast_path_agrees_with_the_full_normaliser(raw):
    try:
        full = _normalise(raw)
    except BadPath:
        with pytest.raises(BadPath):
            normalise_path(raw)
        return
    assert normalise_path(raw) == full


@settings(max_examples=3000, deadline=None)
@given(PATHS)
def test_canonical_paths_have_no_tricks_left(raw):
    try:
        path = normalise_path(raw)
    except BadPath:
        return
    segs = path.split("/")[1:]
    assert "//" not in path
    assert all(s not in (".", "..") for s in segs)
    assert ";" not in path and "\\" not in path
    lowered = path.lower()
    for enc in ("%2f", "%5c", "%00", "%2e", "%61"):  # never left encoded where it could be decoded later
        assert enc not in lowered, path
    assert normalise_path(path.encode("latin-1")) == path  # idempotent


# ---- the invariant against a lenient reader ---------------------------------------------------
import re  # noqa: E402
import unicodedata  # noqa: E402
from urllib.parse import unquote  # noqa: E402

TRICKY = st.one_of(
    SEGMENT,
    st.sampled_from(
        [
            "admin.",
            "admin%2e",
            "admin%20",
            "admin%09",
            "..;",
            "admin..;",
            "%252e%252e",
            "%25%32%65",
            "%253b",
            "%3b",
            "%3f",
            "%23",
            "Admin",
            "%41dmin",
            "\uff41dmin",
            "\u212a",
            "%ef%bc%8e",
            "a%0d%0ab",
            "%c0%ae",
            "adm%69n",
            "x%2520",
        ]
    ),
    st.text(alphabet="aA.;%2e5cf0 \t", min_size=1, max_size=8),
    st.text(min_size=1, max_size=4).map(lambda t: t.replace("/", "")),
)
TRICK_PATHS = st.lists(TRICKY, max_size=6).map(lambda segs: ("/" + "/".join(segs)).encode("utf-8", "surrogatepass"))


def lenient_read(path: str) -> str:
    """How the most lenient server we know of reads a path: decodes twice, takes '\\' for '/',
    cuts at '?'/'#', drops ';params', strips trailing dots and white space, resolves dot
    segments, folds Unicode and case."""
    text = unquote(unquote(path, errors="replace"), errors="replace").replace("\\", "/")
    text = re.split(r"[?#]", text, maxsplit=1)[0]
    out: list[str] = []
    for seg in text.split("/"):
        seg = seg.split(";", 1)[0].rstrip(". \t")
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    return unicodedata.normalize("NFKC", "/" + "/".join(out)).casefold()


def plain_read(path: str) -> str:
    """How the gateway's router reads its canonical path: one decoding, case folded."""
    return unicodedata.normalize("NFKC", unquote(path.rstrip("/") or "/")).casefold()


@settings(max_examples=1500, deadline=None)
@given(TRICK_PATHS)
def test_a_lenient_server_reads_the_canonical_path_as_the_router_does(raw):
    try:
        path = normalise_path(raw)
    except BadPath:
        return
    assert lenient_read(path) == plain_read(path), (raw, path)
