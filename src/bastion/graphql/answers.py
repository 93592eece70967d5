"""The GraphQL guard's answer rewriting, as a `ResponseRewriter` for the response body engine
(`bastion.response_body`): upstream errors masked (`errors.py`), "Did you mean" suggestions
stripped, IDE pages refused (`ide.py`).

Bodies come whole through `Buffered`; a large answer (over `max_buffered_bytes`) passes as long as
no part of it needs rewriting, and is refused with 502 otherwise (fail closed).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from bastion.graphql import errors, ide
from bastion.http import Request, Response, media_type, problem
from bastion.response_body import BodyInfo, Buffered, Unfilterable

log = logging.getLogger("bastion.graphql")


def is_html(resp: Response) -> bool:
    ctype = resp.get_header(b"content-type")
    return ctype is not None and media_type(ctype) in (b"text/html", b"application/xhtml+xml")


def ide_refusal(req: Request) -> Response:
    return problem(
        404,
        "graphql-ide-disabled",
        "GraphQL IDE pages are not served here (the route's graphql policy has ide: false)",
        request_id=req.request_id,
        stopped_by="graphql",
    )


class AnswerRewriter:
    """One per route (stateless per request): `wants` sees the head, `transform` the body."""

    def __init__(
        self,
        mask: errors.MaskRules | None,
        strip: bool,
        ide_allowed: bool,
        log_bytes: int,
        *,
        audit: bool = False,
        audit_ide: bool = False,
    ) -> None:
        """`audit`: masking and stripping are worked out but the answer goes out untouched, the
        audit line saying what enforcing would have changed; `audit_ide`: the same for an IDE
        page (the guard's `modes.answers` / `modes.ide` set to audit)."""
        self.mask = mask
        self.strip = strip
        self.ide_allowed = ide_allowed
        self.log_bytes = log_bytes
        self.audit = audit
        self.audit_ide = audit_ide

    @property
    def active(self) -> bool:
        return self.mask is not None or self.strip or not self.ide_allowed

    def wants(self, resp: Response, json: bool) -> bool:
        return json or (not self.ide_allowed and is_html(resp))

    def transform(self, req: Request, resp: Response, ctx: Any, info: BodyInfo) -> Buffered:
        return Buffered(
            lambda body: self.rewrite(req, resp, ctx, body, info.sniffed),
            info.rules.max_buffered_bytes,
            needs=self.needs,
        )

    def needs(self, data: bytes) -> bool:
        if (self.mask is not None and data.find(b"errors") >= 0) or (
            self.strip and errors.SUGGESTION_B.search(data) is not None
        ):
            return True
        return not self.ide_allowed and ide.MARKERS.search(data) is not None

    def rewrite(self, req: Request, resp: Response, ctx: Any, body: bytes, sniffed: bool) -> bytes:
        if body.lstrip()[:1] not in (b"{", b"["):  # not JSON: an HTML page (the IDE?) or text
            if not self.ide_allowed and is_html(resp) and ide.is_ide_page(body):
                if self.audit_ide:
                    ctx.log_fields.setdefault("graphql_audit", []).append("IDE page answered (would be refused)")
                    return body
                log.warning("request %s: the upstream served an IDE page; refused", req.request_id)
                ctx.log_fields["graphql_ide"] = "refused"
                return resp.become(ide_refusal(req))
            return body
        if not self.needs(body):
            return body
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            if sniffed:
                return body
            raise Unfilterable("malformed", "the JSON body is malformed") from None
        masked = errors.mask_document(doc, req.request_id, self.mask, strip=self.strip)
        if masked:
            if not self.audit:
                ctx.log_fields["graphql_errors_masked"] = len(masked)
            for err in masked:
                text = orjson.dumps(err).decode("utf-8", "replace")
                log.warning(
                    "request %s: upstream GraphQL error %s: %s",
                    req.request_id,
                    "not masked (audit)" if self.audit else "masked",
                    errors.for_log(text, self.log_bytes),
                )
        if self.audit:
            notes = ctx.log_fields.setdefault("graphql_audit", [])
            if masked:
                notes.append(f"would mask {len(masked)} upstream error(s)")
            if self.strip and errors.SUGGESTION_B.search(body) is not None:
                notes.append("would strip suggestions")
            return body
        return orjson.dumps(doc)
