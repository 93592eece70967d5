"""Response filtering (OWASP API3, API8): sensitive fields removed or masked from JSON answers,
by name (recursively, case-insensitive, with patterns) and by value (card numbers that pass
Luhn, private key blocks, JWT-shaped strings). Non-JSON and oversized bodies pass untouched."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field, field_validator

from bastion.http import Request, Response, is_json
from bastion.pipeline import Context, Policy, PolicyConfig

DEFAULT_FIELDS = ["password", "password_hash", "ssn", "credit_card", "secret", "secret_key", "token",
                  "api_key", "private_key"]
_CARD_RUN = re.compile(r"\d[\d -]{11,60}\d")  # digits with spaces/dashes, long enough for a card
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}")
VALUE_KINDS = {"card": None, "private_key": _PRIVATE_KEY, "jwt": _JWT}


def luhn(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if alt:
            d *= 2
            if d > 9:
                d -= 9
        total += d
        alt = not alt
    return total % 10 == 0


def _has_card(text: str) -> bool:
    """A 13-19 digit number (groups separated by spaces or dashes allowed) that passes Luhn.
    In a longer run, only whole groups are combined: a 25-digit order number is not a card."""
    for m in _CARD_RUN.finditer(text):
        groups = re.split(r"[ -]+", m.group())
        for i in range(len(groups)):
            digits = ""
            for g in groups[i:]:
                digits += g
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and luhn(digits):
                    return True
    return False


class ResponseFilterConfig(PolicyConfig):
    fields: list[str] = Field(default_factory=lambda: list(DEFAULT_FIELDS),
                              description="Field names removed at any depth (case-insensitive).")
    field_patterns: list[str] = Field(default_factory=list, description="Regexes on field names (full match).")
    values: list[Literal["card", "private_key", "jwt"]] = Field(
        default_factory=lambda: ["card", "private_key", "jwt"], description="Value kinds filtered wherever they are.")
    mode: Literal["remove", "mask"] = Field("remove", description="Drop the field, or replace its value.")
    mask: str = Field("[FILTERED]", description="The replacement in mask mode.")
    max_bytes: int = Field(1024 * 1024, ge=1024, description="Larger bodies pass untouched (and are logged).")

    @field_validator("field_patterns")
    @classmethod
    def _patterns(cls, values: list[str]) -> list[str]:
        for v in values:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"{v!r} is not a regular expression: {exc}") from None
        return values


class ResponseFilter(Policy[ResponseFilterConfig]):
    name: ClassVar[str] = "response_filter"
    priority: ClassVar[int] = 400
    Config = ResponseFilterConfig

    def __init__(self, config: ResponseFilterConfig, env) -> None:
        super().__init__(config, env)
        self.names = frozenset(f.lower() for f in config.fields)
        self.patterns = [re.compile(p, re.IGNORECASE) for p in config.field_patterns]
        self.card = "card" in config.values
        self.value_res = [VALUE_KINDS[k] for k in config.values if VALUE_KINDS[k] is not None]
        self.remove = config.mode == "remove"
        self.mask = config.mask
        self.max_bytes = config.max_bytes

    def _sensitive_name(self, key: str) -> bool:
        k = key.lower()
        return k in self.names or any(p.fullmatch(k) for p in self.patterns)

    def _sensitive_value(self, value: str) -> bool:
        return (self.card and _has_card(value)) or any(r.search(value) for r in self.value_res)

    def values_possible(self, body: bytes) -> bool:
        """One scan of the raw body: can any value match at all? (Most answers have none, and
        then the walk checks names only.)"""
        text = body.decode("utf-8", "replace")
        return (self.card and _has_card(text)) or any(r.search(text) for r in self.value_res)

    def filter(self, doc: Any, check_values: bool = True) -> tuple[Any, int]:
        """Filter in place, iteratively (no recursion limit to hit on deep documents)."""
        count = 0
        names, patterns = self.names, self.patterns
        sensitive_value = self._sensitive_value if check_values else None
        stack = [doc]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                for key in list(node):
                    value = node[key]
                    k = key.lower()
                    if (k in names or (patterns and any(p.fullmatch(k) for p in patterns))
                            or (sensitive_value is not None and type(value) is str and sensitive_value(value))):
                        count += 1
                        if self.remove:
                            del node[key]
                        else:
                            node[key] = self.mask
                    elif isinstance(value, (dict, list)):
                        stack.append(value)
            elif isinstance(node, list):
                for i, value in enumerate(node):
                    if sensitive_value is not None and type(value) is str and sensitive_value(value):
                        count += 1
                        node[i] = self.mask  # list positions are kept: removing would shift meaning
                    elif isinstance(value, (dict, list)):
                        stack.append(value)
        return doc, count

    async def on_request(self, req: Request, ctx: Context) -> Response | None:
        ctx.drop_request_headers.add(b"accept-encoding")  # the answer must be readable to filter it
        ctx.rewrite_limit = min(ctx.rewrite_limit, self.max_bytes)
        ctx.response_rewriters.append(self)
        return None

    @staticmethod
    def wants(resp: Response) -> bool:
        return is_json(resp.get_header(b"content-type"))

    def rewrite(self, req: Request, resp: Response, body: bytes, ctx: Context) -> bytes:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        doc, count = self.filter(doc, self.values_possible(body))
        if not count:
            return body
        ctx.log_fields["filtered_fields"] = ctx.log_fields.get("filtered_fields", 0) + count
        return orjson.dumps(doc)
