"""`bodies.multipart_fields`: a text field is found under every name a multipart parser could
give it. Found from outside (session 5): a part that names itself twice (`name="comment";
name="url"`, or two Content-Disposition lines) was read by the email package as `comment` only,
while werkzeug takes the last `name` (`url`). Generated over the spellings of the disposition."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bastion import bodies

CT = bodies.parse_content_type("multipart/form-data; boundary=B")
VALUE = b"http://127.0.0.1:9/x"

DISPOSITIONS = [
    ['form-data; name="url"'],
    ["form-data; name=url"],
    ["FORM-DATA; NAME=url"],
    ["form-data; name*=utf-8''url"],
    ['form-data; name="comment"; name="url"'],
    ['form-data; name="url"; name="comment"'],
    ['form-data; name="comment"', 'form-data; name="url"'],
    ['form-data; name="url"; filename=""'],
    ["form-data; name=\"url\"; filename*=utf-8''"],
]


@given(
    lines=st.sampled_from(DISPOSITIONS),
    eol=st.sampled_from([b"\r\n", b"\n"]),
    before=st.lists(st.sampled_from([b"title", b"tags"]), unique=True, max_size=2),
    closed=st.booleans(),
)
def test_every_name_a_parser_could_read_is_a_field(
    lines: list[str], eol: bytes, before: list[bytes], closed: bool
) -> None:
    body = b""
    for name in before:
        body += b"--B" + eol + b'Content-Disposition: form-data; name="' + name + b'"' + eol + eol + b"x" + eol
    body += b"--B" + eol + b"".join(b"Content-Disposition: " + line.encode() + eol for line in lines) + eol + VALUE
    if closed:
        body += eol + b"--B--" + eol
    fields = bodies.multipart_fields(body, CT)
    assert ("url", VALUE.decode()) in fields, fields


def test_a_file_part_is_not_a_field() -> None:
    body = b'--B\r\nContent-Disposition: form-data; name="url"; filename="a.txt"\r\n\r\n' + VALUE + b"\r\n--B--\r\n"
    assert bodies.multipart_fields(body, CT) == []
    assert bodies.multipart_files(body, CT) == [VALUE.decode()]
