"""Text without secrets, for evidence and log lines: JWTs, bearer tokens, key-like fields
(password, secret, api_key, token...) and card-like numbers are masked. Shared by the scanner's
findings and the GraphQL guard's log of masked upstream errors."""

from __future__ import annotations

import re

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"']+")
_KEYISH = re.compile(
    r"(?i)(\"?(?:password|passwd|password_hash|secret|api_key|apikey|token|access_token|"
    r"refresh_token|client_secret)\"?\s*[:=]\s*\"?)([^\"',&\s}]{1,})"
)
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")


def redact(text: str, limit: int = 600) -> str:
    """Evidence without secrets: tokens, keys, passwords and card numbers are masked."""
    text = _JWT.sub(lambda m: m.group(0)[:10] + "…[redacted JWT]", text)
    text = _BEARER.sub(r"\1[redacted]", text)
    text = _KEYISH.sub(lambda m: m.group(1) + "[redacted]", text)
    text = _CARD.sub("[redacted number]", text)
    return text if len(text) <= limit else text[:limit] + "…"
