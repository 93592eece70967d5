"""Masking what a GraphQL upstream says about itself in `errors` (graphql-armor's masked
errors, done at the gateway).

An upstream's `errors` entries fall in two groups. Errors the server produces before it
executes anything — syntax and validation ("Cannot query field …", "Variable "$id" of required
type …") — are about the client's document and are what clients need to fix it: they carry no
`path`, and are kept. Errors raised while executing (they carry a `path`) come from resolvers:
a deliberate "not found" or "forbidden", but just as often a database driver's message, a file
path or a stack trace; the gateway cannot tell a deliberate one by its type as the server could,
so it masks them all, unless their `extensions.code` is one the operator lists as safe
(`safe_error_codes`). Any kept message that still looks internal (SQL text, file paths, stack
frames, exception class names, memory addresses) is masked too. Masked entries get a generic
message and `extensions: {code: INTERNAL_SERVER_ERROR, request_id}`; `locations` and `path`
stay (they describe the client's own document). Of the extensions of kept entries only the keys
in `safe_extensions` stay (`exception`, `stacktrace` and the like never do). "Did you mean …?"
suggestions are removed from every kept message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bastion.redact import redact

SUGGESTION = re.compile(r"\s*Did you mean[^?]*\?", re.IGNORECASE)
SUGGESTION_B = re.compile(rb"did you mean", re.IGNORECASE)

# What internal details look like in an error message (checked on kept messages only).
INTERNAL = re.compile(
    r"Traceback \(most recent call last\)"
    r"|\bFile \"[^\"]+\", line \d+"  # Python frames
    r"|\bat [\w$.<>]+\([\w$.]*:\d+\)"  # Java frames: at com.x.Y.m(Y.java:42)
    r"|\bat (?:async )?[\w$.<>]+ \(?(?:file://)?/[^)\s]*:\d+(?::\d+)?\)?"  # Node frames
    r"|(?:^|[\s'\"(=])(?:/[\w.@-]+){2,}\.(?:py|js|mjs|cjs|ts|java|kt|rb|php|go|rs|cs|scala|ex|so)\b"  # paths
    r"|\b[A-Za-z]:\\[\w\\. -]+"  # Windows paths
    r"|/(?:home|usr|var|opt|srv|app|etc|tmp|root)/[\w./-]+"
    r"|\b(?:SELECT\s[\s\S]{0,200}?\sFROM|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|CREATE\s+TABLE)\b"
    r"|\bsyntax error at or near\b|\bno such (?:table|column)\b|\bSQLSTATE\b|\bORA-\d{5}\b"
    r"|\bduplicate key value violates\b|\bUNIQUE constraint failed\b|\brelation \"[^\"]*\" does not exist"
    r"|\b(?:sqlite3|psycopg2?|pymysql|MySQLdb|sqlalchemy|asyncpg|SequelizeDatabaseError|PrismaClient\w*)\b"
    r"|\b(?:java|javax|jakarta|org\.hibernate|org\.springframework|com\.mysql|org\.postgresql)\.[\w.]+"
    r"|\b\w+(?:Error|Exception)\b:"  # "KeyError: 'x'", "NullPointerException: …"
    r"|\bNullPointerException\b|\bSegmentation fault\b|\bECONNREFUSED\b|\bENOENT\b"
    r"|\b0x[0-9a-fA-F]{8,}\b"  # memory addresses
    r"|<(?:html|body|pre)\b",  # an HTML debug page as a message
    re.IGNORECASE,
)

DEFAULT_SAFE_CODES = (
    "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED",
    "BAD_USER_INPUT",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "PERSISTED_QUERY_NOT_FOUND",
    "PERSISTED_QUERY_NOT_SUPPORTED",
    "OPERATION_RESOLUTION_FAILURE",
    "BAD_REQUEST",
)


@dataclass(frozen=True, slots=True)
class MaskRules:
    message: str = "Unexpected error."
    safe_codes: frozenset[str] = frozenset(DEFAULT_SAFE_CODES)
    safe_extensions: frozenset[str] = frozenset({"code", "classification"})


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")


def for_log(text: str, limit: int) -> str:
    """An upstream error as operators may read it: credentials in URLs, tokens, keys,
    passwords and card numbers masked (`bastion.redact`), at most `limit` characters."""
    return redact(_USERINFO.sub(r"\1[redacted]@", text), limit)


def looks_internal(message: str) -> bool:
    return INTERNAL.search(message) is not None


def _kept(err: dict[str, Any], rules: MaskRules) -> bool:
    message = err.get("message")
    if not isinstance(message, str) or looks_internal(message):
        return False
    ext = err.get("extensions")
    code = ext.get("code") if isinstance(ext, dict) else None
    if isinstance(code, str) and code in rules.safe_codes:
        return True
    if code is not None and code not in rules.safe_codes:
        return err.get("path") is None and code != "INTERNAL_SERVER_ERROR"
    return err.get("path") is None  # validation and syntax errors carry no path


def mask_error(err: Any, request_id: str, rules: MaskRules, strip: bool = True) -> tuple[dict[str, Any], bool]:
    """The entry the client gets, and whether it was masked."""
    if not isinstance(err, dict):
        return {
            "message": rules.message,
            "extensions": {"code": "INTERNAL_SERVER_ERROR", "request_id": request_id},
        }, True
    if _kept(err, rules):
        out = {k: v for k, v in err.items() if k in ("message", "locations", "path")}
        out["message"] = SUGGESTION.sub("", err["message"]) if strip else err["message"]
        ext = err.get("extensions")
        if isinstance(ext, dict):
            kept_ext = {k: v for k, v in ext.items() if k in rules.safe_extensions}
            if kept_ext:
                out["extensions"] = kept_ext
        return out, False
    out = {k: v for k, v in err.items() if k in ("locations", "path") and _plain(v)}
    out["message"] = rules.message
    out["extensions"] = {"code": "INTERNAL_SERVER_ERROR", "request_id": request_id}
    return out, True


def _plain(v: Any) -> bool:
    """`locations`/`path` as the spec shapes them (numbers and names), nothing smuggled in."""
    return isinstance(v, list) and all(
        isinstance(x, (int, str))
        and not isinstance(x, bool)
        and len(str(x)) <= 200
        or isinstance(x, dict)
        and all(isinstance(n, int) for n in x.values())
        for x in v
    )


def mask_document(doc: Any, request_id: str, rules: MaskRules | None, *, strip: bool = True) -> list[Any]:
    """Rewrite the `errors` of one GraphQL answer (or of each answer of a batch) in place;
    returns the original entries that were masked. With `rules` None nothing is masked and
    only suggestions are stripped (`strip`)."""
    masked: list[Any] = []
    for d in doc if isinstance(doc, list) else [doc]:
        if not isinstance(d, dict) or not isinstance(d.get("errors"), list):
            continue
        errors = d["errors"]
        for i, err in enumerate(errors):
            if rules is None:
                if strip and isinstance(err, dict) and isinstance(err.get("message"), str):
                    err["message"] = SUGGESTION.sub("", err["message"])
                continue
            errors[i], was = mask_error(err, request_id, rules, strip)
            if was:
                masked.append(err)
    return masked
