"""Request validation against an OpenAPI operation (and opt-in response checks).

Routes built from `openapi:` set `spec` and `operation` themselves; a hand-written route can
name them too. Malformed JSON answers 400, an undeclared media type 415, anything else that
breaks the schema 422 with one entry per failing field (`in`, JSON `pointer`, `rule`,
`message`) — messages say what the rule wants and never repeat the value that was sent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from bastion import bodies
from bastion.bodies import BodyRefused
from bastion.http import BodyTimeout, BodyTooLarge, ClientDisconnected, Request, Response, body_problem, problem
from bastion.openapi.operations import Limits, Normalise, Operation, compile_operations, prune
from bastion.openapi.spec import SpecError, load_spec
from bastion.pipeline import Context, Policy, PolicyConfig
from bastion.response_body import BodyInfo, Buffered, Unfilterable

log = logging.getLogger("bastion.validation")


class LimitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_depth: int = Field(32, ge=1, le=512, description="JSON nesting depth.")
    max_array_items: int = Field(10_000, ge=1, description="Items in any one JSON array.")
    max_string_length: int = Field(100_000, ge=1, description="Characters in any one JSON string or key.")
    max_properties: int = Field(1_000, ge=1, description="Properties in any one JSON object.")


class NormaliseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trim: bool = Field(False, description="Strip leading and trailing white space from strings.")
    nfc: bool = Field(False, description="Unicode NFC-normalise strings.")
    lowercase_email: bool = Field(False, description="Lower-case strings whose schema says `format: email`.")


class ValidationConfig(PolicyConfig):
    spec: str | None = Field(None, description="OpenAPI document (set by routes with `openapi:`).")
    operation: str | None = Field(None, description='"METHOD /template" of the operation to check against.')
    undocumented: bool = Field(False, description="Refuse every request (the catch-all of an openapi route).")
    unknown_properties: Literal["refuse", "allow"] = Field(
        "refuse",
        description="Body properties the schema does not declare (mass assignment): refused "
        "unless a schema says `x-bastion-allow-unknown: true`, or everywhere with 'allow'.",
    )
    unknown_query: Literal["allow", "refuse"] = Field(
        "allow", description="Query parameters the operation does not declare."
    )
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig, description="Limits that hold even where the schema is silent."
    )
    normalise: NormaliseConfig = Field(
        default_factory=NormaliseConfig,
        description="Normalise JSON strings before validation (and forward the result).",
    )
    responses: Literal["off", "log", "remove"] = Field(
        "off",
        description="Check JSON responses: 'log' counts and logs schema violations, 'remove' also "
        "drops properties the response schema does not declare (and writeOnly ones).",
    )
    max_errors: int = Field(20, ge=1, le=200, description="Errors listed in one 422 answer.")


class Validation(Policy[ValidationConfig]):
    name: ClassVar[str] = "validation"
    priority: ClassVar[int] = 590
    Config = ValidationConfig

    def __init__(self, config: ValidationConfig, env) -> None:
        super().__init__(config, env)
        self.op: Operation | None = None
        self.failures_by_rule: dict[tuple[str, str], int] = {}
        self.response_violations = 0
        self.properties_removed = 0
        if config.spec is None or config.undocumented:
            if config.operation is not None and config.spec is None:
                raise ValueError("validation.operation needs validation.spec")
            return
        path = Path(env.config_dir) / config.spec
        try:
            spec = load_spec(path)
            ops = compile_operations(
                spec, close_objects=config.unknown_properties == "refuse", responses=config.responses != "off"
            )
        except SpecError as exc:
            raise ValueError(str(exc)) from None
        if config.operation is None:
            raise ValueError("validation.spec needs validation.operation ('METHOD /template')")
        op = ops.get(config.operation)
        if op is None:
            raise ValueError(f"the spec has no operation {config.operation!r}")
        self.op = op
        self.limits = Limits(**config.limits.model_dump())
        self.normalise = Normalise(**config.normalise.model_dump())
        self.header_names = [
            (p.name.lower(), p.name.lower().encode("latin-1")) for p in op.params if p.location == "header"
        ]
        self.wants_cookies = any(p.location == "cookie" for p in op.params)
        self.check_response = config.responses != "off" and bool(op.responses)

    async def on_request(self, req: Request, ctx: Context) -> Response | None:
        if self.config.undocumented:
            self.failures_by_rule[("path", "undocumented")] = self.failures_by_rule.get(("path", "undocumented"), 0) + 1
            return problem(
                404, "undocumented-endpoint", "this endpoint is not part of the API", request_id=req.request_id
            )
        op = self.op
        if op is None:
            return None
        body: bytes | None = None
        if op.bodies and req.has_body():
            # the body as the WAF and the upstream get it: one unambiguous Content-Type, content
            # codings undone (the upstream then receives the decoded bytes), no duplicated JSON keys
            try:
                ct = bodies.content_type(req)
                if ct is not None and _json_in_parameters_only(ct, req):
                    # validated as its media type, read as JSON by Laravel (`image/png; type=/json`)
                    raise BodyRefused(
                        415,
                        "unsupported-media-type",
                        f"the Content-Type mentions JSON but is {ct.media}: send a JSON type to send JSON",
                    )
                body = await bodies.read_body(req, ctx)
                if ct is not None and ct.kind == "json":
                    bodies.check_json_unique(body)
            except BodyRefused as exc:
                return exc.response(req)
            except (BodyTooLarge, BodyTimeout, ClientDisconnected) as exc:
                return body_problem(exc, req) or problem(
                    400, "bad-request", "the client went away", request_id=req.request_id
                )
        headers = {}
        for name, raw_name in self.header_names:
            value = req.header(raw_name)
            if value is not None:
                headers[name] = value.decode("latin-1")
        cookies = req.cookies() if self.wants_cookies else {}
        status, errors, rewritten = op.check_request(
            path_params=req.path_params,
            query=req.query,
            headers=headers,
            cookies=cookies,
            content_type=req.header_str(b"content-type"),
            body=body,
            limits=self.limits,
            normalise=self.normalise,
            unknown_query=self.config.unknown_query == "allow",
        )
        if status:
            for e in errors:
                key = (e.location, e.rule)
                self.failures_by_rule[key] = self.failures_by_rule.get(key, 0) + 1
            shown = errors[: self.config.max_errors]
            ctx.log_fields["validation"] = [f"{e.location}:{e.pointer}:{e.rule}" for e in shown[:5]]
            kind = {400: "malformed-body", 415: "unsupported-media-type"}.get(status, "validation-failed")
            detail = {400: "the request body cannot be parsed", 415: "this media type is not accepted here"}.get(
                status, "the request does not match the API's schema"
            )
            return problem(
                status, kind, detail, request_id=req.request_id, extra={"errors": [e.as_dict() for e in shown]}
            )
        if rewritten is not None:
            req.body = rewritten
        if self.check_response:
            ctx.response_rewriters.append(self)
        return None

    # ---------------------------------------------------------------- responses
    def _schema_for(self, status: int) -> Any:
        assert self.op is not None
        by_status = self.op.responses
        for key in (str(status), f"{str(status)[0]}XX", "DEFAULT"):
            if key in by_status:
                return by_status[key]
        return None

    def wants(self, resp: Response, json: bool) -> bool:
        return json and self._schema_for(resp.status) is not None

    def transform(self, req: Request, resp: Response, ctx: Context, info: BodyInfo) -> Buffered:
        remove = self.config.responses == "remove"
        # 'log' only looks: a body too large to hold passes unchecked; 'remove' changes it: refused
        return Buffered(
            lambda body: self.rewrite(req, resp, body, ctx, info.sniffed),
            info.rules.max_buffered_bytes,
            needs=None if remove else (lambda data: False),
        )

    def rewrite(self, req: Request, resp: Response, body: bytes, ctx: Context, sniffed: bool = False) -> bytes:
        media = self._schema_for(resp.status)
        schema = media.get("application/json") or next(iter(media.values()))
        if not body.strip():
            return body
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            if sniffed:
                return body
            self.response_violations += 1
            ctx.log_fields["response_schema"] = ["body:not JSON"]
            if self.config.responses == "remove":
                raise Unfilterable("malformed", "the JSON body is malformed") from None
            return body
        errors = schema.validator.errors(value, "response", limit=5)
        if errors:
            self.response_violations += 1
            ctx.log_fields["response_schema"] = [f"{e.pointer}:{e.rule}" for e in errors]
            log.warning(
                "response of %s breaks its schema: %s",
                req.route_name,
                ", ".join(f"{e.pointer or '/'} {e.rule}" for e in errors),
            )
        if self.config.responses != "remove":
            return body
        pruned, removed = prune(value, schema.schema)
        if not removed:
            return body
        self.properties_removed += removed
        ctx.log_fields["response_properties_removed"] = removed
        return orjson.dumps(pruned)


def _json_in_parameters_only(ct: bodies.ContentType, req: Request) -> bool:
    """A non-JSON media type whose Content-Type parameters mention JSON: Laravel reads the body
    as JSON (`Request::isJson` is a substring test on the whole header), while the schema checked
    here is the media type's (a binary string for `image/png`)."""
    return ct.kind != "json" and "/json" not in ct.media and "+json" not in ct.media and bodies.mentions_json(req)
