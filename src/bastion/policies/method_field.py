"""A method override carried in the body: refused.

Rails (Rack::MethodOverride), Laravel and Symfony (`http_method_override`), Express's
method-override with a body getter and many PHP frameworks turn a POST into a PUT, PATCH or
DELETE when its form body, or for Laravel its JSON body, has a `_method` field. The gateway routes,
authorises and rate-limits the POST it sees while the application performs the DELETE: a route
that allows POST and not DELETE is no protection. The query and header forms are handled where
the request is routed (`edge.method_override`); a body is read after routing, when its route is
known (and with it the body limit), so an override found there cannot be routed any more and is
refused (400), whatever `edge.method_override` says. A client that needs the override sends the
header instead.

Read: POST bodies with a form or JSON type, or another or no type that sniffs as one (the reading
of `bastion.arguments` that the WAF and the SSRF guard share, computed once per request), after
their content coding is undone;
JSON escapes and form percent-encoding are decoded, so `"\\u005fmethod"` and `%5Fmethod` are the
same field. A value that names POST (any case, surrounding white space) is harmless and passes.
multipart/form-data parts (not files) by their name. Not read: XML and GraphQL bodies, unless
the Content-Type header contains "/json" or "+json" anywhere (`application/xml; x=/json`): Laravel
then reads the body as JSON whatever the type (`Request::isJson`), so it is read as JSON here too.

Names are compared as PHP registers them too (`php_field_name`): PHP, and so Laravel and Symfony, drop
leading spaces, turn spaces and dots into underscores and cut at a NUL, so `.method=DELETE`,
`_method%00x=DELETE` and `+_method=DELETE` are `$_POST['_method']` there. A multipart part that
names itself twice (`name="x"; name="_method"`) is read by every `name` it gives: Rack and PHP keep
the last, the stdlib's parser the first. Rack 2 (Rails up to 7.0) drops brackets around a plain
key: `[_method]=DELETE` and `_method]=DELETE` are its `_method`.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

import orjson
from pydantic import Field

from bastion import bodies
from bastion.arguments import api_inputs
from bastion.http import Request, Response, problem
from bastion.http.headers import METHOD_OVERRIDE_HEADERS, php_field_name, rack2_field_name
from bastion.pipeline import Context, Policy, PolicyConfig, RequestAnswer


class MethodFieldConfig(PolicyConfig):
    fields: list[str] = Field(
        default_factory=lambda: ["_method"],
        description="Top-level body fields that frameworks read as the real method (Rails, Laravel, Symfony: `_method`).",
    )


class MethodField(Policy[MethodFieldConfig]):
    name: ClassVar[str] = "method_field"
    priority: ClassVar[int] = (
        595  # after auth and rate limits (no body is buffered for refused clients), before validation
    )
    Config = MethodFieldConfig
    default_on: ClassVar[bool] = True

    def __init__(self, config: MethodFieldConfig, env: Any) -> None:
        super().__init__(config, env)
        self.fields = frozenset(config.fields)
        self.needles = tuple(f.encode() for f in config.fields) + (b"\\u", b"%", b"=?", b"*=")
        # the names as PHP may be sent them: any '_' written as a space ('+' in a form) or a dot
        self.php_needle = re.compile(
            b"|".join(re.escape(f.encode()).replace(b"_", b"[_ +.]") for f in config.fields if "_" in f) or b"(?!)"
        )

    def _may_hold(self, body: bytes) -> bool:
        """Whether the body can spell a field at all: its name as it is, or some escape that could
        write it another way (a JSON `\\u`, percent-encoding, an RFC 2047 or RFC 2231 parameter in a
        multipart head; UTF-16/32 text). Most bodies have none, and are not parsed here."""
        return (
            any(n in body for n in self.needles) or self.php_needle.search(body) is not None or bodies.wide_text(body)
        )

    def on_request_sync(self, req: Request, ctx: Context) -> RequestAnswer:
        if not req.has_body():
            return None  # (no coroutine for the usual request)
        if req.method != "POST" and not _overridden(req):
            return None
        return self._check(req, ctx)

    async def _check(self, req: Request, ctx: Context) -> Response | None:
        limit = req.body_limit or bodies.DEFAULT_LIMIT
        ambiguous: bodies.BodyRefused | None = None
        try:
            try:
                ct = bodies.content_type(req)
            except bodies.BodyRefused as exc:  # several or malformed types: the upstream picks one
                ct, ambiguous = None, exc
            # Laravel reads the body as JSON when the Content-Type header contains "/json" or
            # "+json" anywhere, parameters included (`application/xml; x=/json`)
            laravel_json = bodies.mentions_json(req)
            if ct is not None and ct.kind in ("xml", "graphql") and not laravel_json:
                return None  # see the module's doc
            body = await bodies.read_body(req, ctx, limit=limit)
            if not self._may_hold(body):
                return None  # whatever the type, nothing here can name a method
            if ambiguous is not None:
                raise ambiguous  # it could, under a type this reading cannot choose
            found = _json_field(body, self.fields) if laravel_json else None
            if found is not None or (ct is not None and ct.kind in ("xml", "graphql")):
                pass  # found as Laravel reads it; or an XML/GraphQL type, read only that way
            elif ct is not None and ct.kind == "multipart":
                found = _multipart_field(body, ct, self.fields)
            else:
                # JSON and forms; other and missing types as `bastion.arguments` sniffs them
                # (Laravel reads any type containing "/json" as JSON, Rack a typeless POST as a form)
                inputs = await api_inputs(req, ctx, max_body=limit)
                found = next(
                    (
                        (a.name, str(a.value))
                        for a in inputs.arguments
                        if a.source == "body" and _named(a.name, self.fields) and _names_another_method(a.value)
                    ),
                    None,
                )
        except bodies.BodyRefused as refused:
            return refused.response(req, self.name)
        if found is None:
            return None
        return problem(
            400,
            "bad-method-override",
            f"the body's {found[0]} field asks the upstream for {str(found[1]).strip().upper()[:16]!r}, not the "
            "POST routed and checked here; send X-HTTP-Method-Override instead (edge.method_override)",
            request_id=req.request_id,
        )


def _names_another_method(value: object) -> bool:
    """Only a string names a method (Symfony refuses anything but letters; Rails looks the
    upper-cased string up among the methods it knows)."""
    return isinstance(value, str) and value.strip().upper() not in ("", "POST")


def _multipart_field(body: bytes, ct: bodies.ContentType, fields: frozenset[str]) -> tuple[str, str] | None:
    """A text field of a multipart/form-data body (`bodies.multipart_fields`: every name a part
    gives itself) named like one of `fields` whose value names another method. A body the parser
    cannot read is searched for the names as bytes instead: refused when one appears as a part
    name, since the application's parser may read what this one could not."""
    try:
        pairs = bodies.multipart_fields(body, ct, strict=True)
    except Exception:  # the email package raises many kinds on hostile input
        for name in fields:
            spelled = re.escape(name.encode()).replace(b"_", b"[_ .]")  # and as PHP reads it (php_field_name)
            if re.search(rb'name\s*=\s*"?[\s\[\]]*' + spelled + rb'"?', body, re.IGNORECASE):
                return name, "?"
        return None
    return next(((n, v) for n, v in pairs if _named(n, fields) and _names_another_method(v)), None)


def _json_field(body: bytes, fields: frozenset[str]) -> tuple[str, str] | None:
    """A top-level JSON member named like one of `fields` that names another method, read as
    Laravel reads a body whose Content-Type mentions JSON (PHP's json_decode: the last of two
    equal keys, as orjson and Python's json keep); None for a body that is not a JSON object."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            doc = json.loads(body)
        except ValueError:
            return None
    if not isinstance(doc, dict):
        return None
    return next(((k, str(v)) for k, v in doc.items() if k in fields and _names_another_method(v)), None)


def _named(name: str, fields: frozenset[str]) -> bool:
    """Whether a body field is one of `fields` as sent, as PHP registers it or as Rack 2 reads it."""
    return name in fields or php_field_name(name) in fields or rack2_field_name(name) in fields


_OVERRIDE_HEADERS = frozenset(h.encode() for h in METHOD_OVERRIDE_HEADERS)


def _overridden(req: Request) -> bool:
    """A POST that `edge.method_override` already turned into another method: Rack reads the
    body's `_method` before the header, so the body can still name a third method."""
    return any(k in _OVERRIDE_HEADERS for k, _ in req.headers) or b"_method" in req.query
