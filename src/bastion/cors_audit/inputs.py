"""Which endpoints to audit: URLs given, a file of URLs, or every path of an OpenAPI document
against a base URL (path parameters filled with `1`: CORS answers do not depend on them)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bastion.scanner.discovery import operations, parse_spec


class InputError(ValueError):
    """A URL, file or spec that cannot be audited (the CLI says which and exits 2)."""


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{url!r} is not an http(s) URL")
    return url


def read_url_file(path: Path) -> list[str]:
    """One URL a line; blank lines and `#` comments (whole line, or after white space) ignored."""
    out = []
    for line in path.read_text().splitlines():
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if line:
            out.append(line)
    return out


def spec_urls(spec: str, base_url: str) -> list[str]:
    if spec.startswith(("http://", "https://")):
        try:
            r = httpx.get(spec, timeout=10, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise InputError(f"{spec}: {type(exc).__name__}") from None
        if r.status_code != 200:
            raise InputError(f"{spec}: HTTP {r.status_code}")
        text: bytes = r.content
    else:
        text = Path(spec).read_bytes()
    doc = parse_spec(text)
    if doc is None:
        raise InputError(f"{spec}: not an OpenAPI document")
    base = check_url(base_url).rstrip("/")
    paths = dict.fromkeys(re.sub(r"\{[^}]+\}", "1", op.path) for op in operations(doc))
    return [base + (p if p.startswith("/") else "/" + p) for p in paths]


_OWN = ("origin", "access-control-")


def probe_headers(lines: list[str]) -> dict[str, str]:
    """`--header 'Name: value'` lines as a dict. The audit's own headers (Origin,
    Access-Control-Request-*) cannot be set: they are what each probe varies. Names and values are
    checked here (token name, no control characters) so a typo is an error, not a probe that
    silently carries something else."""
    out: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise InputError(f"--header {name or line!r}: expected 'Name: value'")
        if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in value):
            raise InputError(f"--header {name}: control characters in the value")
        if name.lower().startswith(_OWN):
            raise InputError(f"--header {name}: the audit sets this header itself on every probe")
        out[name] = value
    return out


def collect(
    urls: list[str], url_file: Path | None = None, spec: str | None = None, base_url: str | None = None
) -> list[str]:
    found = list(urls)
    if url_file is not None:
        found += read_url_file(url_file)
    if spec is not None:
        if not base_url:
            raise InputError("--openapi needs --base-url")
        found += spec_urls(spec, base_url)
    if not found:
        raise InputError("no endpoints: give URLs, --urls FILE or --openapi SPEC --base-url URL")
    return list(dict.fromkeys(check_url(u) for u in found))
