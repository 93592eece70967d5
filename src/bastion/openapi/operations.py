"""The operations of a spec, each compiled once into what a request check needs.

`compile_operations(spec)` gives one `Operation` per (method, path template): its parameters
with their deserialisers and validators, its request bodies by media type, its effective
security requirement, its `x-bastion-*` extensions and (for the opt-in response checks) its
response schemas. `Operation.check_request(...)` judges one request and lists every failing
field; it knows nothing of the gateway, so the differential test and the benchmark call it
directly.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import jsonschema_rs
import orjson

from bastion.openapi.params import (
    ANY,
    Shape,
    coerce,
    deserialise_content,
    deserialise_label,
    deserialise_query,
    deserialise_simple,
)
from bastion.openapi.schema import SchemaConverter
from bastion.openapi.spec import HTTP_METHODS, Spec, SpecError

_TEMPLATE_SEGMENT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.-]*)\}")


@dataclass(slots=True)
class FieldError:
    location: str  # path, query, header, cookie, body
    pointer: str  # JSON pointer into the value (body) or the parameter name
    rule: str  # the schema keyword that failed, or one of ours (max_depth, media_type, ...)
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"in": self.location, "pointer": self.pointer, "rule": self.rule, "message": self.message}


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits that hold whatever the schema says (or does not say)."""

    max_depth: int = 32
    max_array_items: int = 10_000
    max_string_length: int = 100_000
    max_properties: int = 1_000


@dataclass(frozen=True, slots=True)
class Normalise:
    trim: bool = False
    nfc: bool = False
    lowercase_email: bool = False

    def __bool__(self) -> bool:
        return self.trim or self.nfc or self.lowercase_email


class Validator:
    """A compiled JSON Schema plus messages that never repeat the client's values."""

    __slots__ = ("schema", "_v")

    def __init__(self, schema: dict[str, Any] | bool) -> None:
        self.schema = schema
        self._v = jsonschema_rs.Draft202012Validator(schema, validate_formats=True)

    def errors(self, value: Any, location: str, prefix: str = "", limit: int = 20) -> list[FieldError]:
        if self._v.is_valid(value):
            return []
        out: list[FieldError] = []
        unknown: list[tuple[FieldError, list[str]]] = []
        for err in self._v.iter_errors(value):
            pointer = prefix + "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in err.instance_path)
            fe = FieldError(location, pointer, _RULES.get(err.kind.name, err.kind.name), _message(err))
            out.append(fe)
            if fe.rule == "additionalProperties":
                unknown.append((fe, [str(n) for n in err.kind.as_dict().get("unexpected", [])]))
            if len(out) >= limit:
                break
        if unknown:  # a read-only property inside allOf is also "unevaluated": say it once
            read_only = {e.pointer for e in out if e.rule == "readOnly"}
            for fe, names in unknown:
                if names and all(f"{fe.pointer}/{n}" in read_only for n in names):
                    out.remove(fe)
        return out


# One name per meaning: a property the schema does not declare is `additionalProperties` whether the
# schema said so or bastion closed it; `false` property schemas come from readOnly properties.
_RULES = {
    "unevaluatedProperties": "additionalProperties",
    "falseSchema": "readOnly",
    "oneOfNotValid": "oneOf",
    "oneOfMultipleValid": "oneOf",
}


def _message(err: Any) -> str:
    kind = err.kind.name
    d = err.kind.as_dict()
    match kind:
        case "type":
            return "must be of type " + " or ".join(d.get("types", []))
        case "required":
            return f"the property {d.get('property')!r} is required"
        case "additionalProperties" | "unevaluatedProperties":
            names = ", ".join(repr(n) for n in d.get("unexpected", []))
            return f"unknown properties are not accepted: {names}"
        case "falseSchema":
            return "this property may not be sent (read-only or forbidden)"
        case "minLength":
            return f"must be at least {d.get('limit')} characters"
        case "maxLength":
            return f"must be at most {d.get('limit')} characters"
        case "minItems":
            return f"must have at least {d.get('limit')} items"
        case "maxItems":
            return f"must have at most {d.get('limit')} items"
        case "minimum":
            return f"must be ≥ {d.get('limit')}"
        case "maximum":
            return f"must be ≤ {d.get('limit')}"
        case "exclusiveMinimum":
            return f"must be > {d.get('limit')}"
        case "exclusiveMaximum":
            return f"must be < {d.get('limit')}"
        case "pattern":
            return f"must match the pattern {d.get('pattern')}"
        case "format":
            return f"must be a valid {d.get('format')}"
        case "enum":
            return "must be one of " + ", ".join(orjson.dumps(o).decode() for o in d.get("options", [])[:20])
        case "constant":
            return "must be the constant the schema names"
        case "oneOfNotValid" | "anyOf":
            return "must match one of the allowed shapes"
        case "oneOfMultipleValid":
            return "matches more than one of the allowed shapes"
        case "multipleOf":
            return f"must be a multiple of {d.get('multiple_of', d.get('limit'))}"
        case "uniqueItems":
            return "items must be unique"
        case "minProperties" | "maxProperties":
            return f"has too {'few' if kind == 'minProperties' else 'many'} properties (limit {d.get('limit')})"
        case _:
            return f"does not satisfy {kind}"


@dataclass(slots=True)
class Param:
    name: str
    location: str
    required: bool
    style: str
    explode: bool
    shape: Shape
    validator: Validator | None
    content_media: str | None = None


@dataclass(slots=True)
class BodyMedia:
    media: str  # as declared: "application/json", "application/*", "*/*"
    kind: Literal["json", "form", "multipart", "other"]
    validator: Validator | None
    shape: Shape


@dataclass(slots=True)
class ResponseSchema:
    validator: Validator
    schema: dict[str, Any] | bool  # converted, open; `prune` walks it


@dataclass
class Operation:
    method: str  # upper case
    path: str  # the spec's template
    operation_id: str | None
    params: list[Param]
    body_required: bool
    bodies: list[BodyMedia]
    security: list[dict[str, list[str]]] | None  # None: the document declares none
    extensions: dict[str, Any]
    responses: dict[str, dict[str, ResponseSchema]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    # ------------------------------------------------------------------ requests
    def check_request(
        self,
        *,
        path_params: dict[str, str],
        query: bytes | str,
        headers: dict[str, str],
        cookies: dict[str, str],
        content_type: str | None,
        body: bytes | None,
        limits: Limits = Limits(),
        normalise: Normalise = Normalise(),
        unknown_query: bool = True,
    ) -> tuple[int, list[FieldError], bytes | None]:
        """(status, errors, body to forward if normalisation changed it). Status 0 = valid."""
        errors: list[FieldError] = []
        q = query.decode("latin-1") if isinstance(query, bytes) else query
        pairs = parse_qsl(q, keep_blank_values=True) if q else []
        seen_query: set[str] = set()
        for p in self.params:
            present, value = self._param_value(p, path_params, pairs, headers, cookies, seen_query)
            if not present:
                if p.required:
                    errors.append(FieldError(p.location, p.name, "required", "this parameter is required"))
                continue
            if p.validator is not None:
                errors.extend(p.validator.errors(value, p.location, p.name))
        if not unknown_query:
            for k, _ in pairs:
                base = k.split("[", 1)[0]
                if k not in seen_query and base not in seen_query:
                    errors.append(FieldError("query", k, "unknown_parameter", "this parameter is not declared"))
                    seen_query.add(k)
        rewritten: bytes | None = None
        has_body = bool(body)
        if not self.bodies:
            pass  # nothing declared: the body is not the spec's business (GET with a body, say)
        elif not has_body:
            if self.body_required:
                errors.append(FieldError("body", "", "required", "a request body is required"))
        else:
            media = (content_type or "").split(";", 1)[0].strip().lower()
            bm = self._media(media)
            if bm is None:
                declared = ", ".join(b.media for b in self.bodies)
                return (
                    415,
                    [FieldError("header", "content-type", "media_type", f"the body must be one of: {declared}")],
                    None,
                )
            status, value, errs = self._parse_body(bm, body or b"", content_type or "", limits)
            if status:
                return status, errs, None
            errors.extend(errs)
            if normalise and bm.kind == "json" and not errs:
                changed = _normalise(value, normalise, bm.validator.schema if bm.validator else {})
                if changed is not value:
                    value = changed
                    rewritten = orjson.dumps(value)
            if bm.validator is not None and not errs:
                errors.extend(bm.validator.errors(value, "body"))
        return (422 if errors else 0), errors, rewritten

    def _param_value(
        self,
        p: Param,
        path_params: dict[str, str],
        pairs: list[tuple[str, str]],
        headers: dict[str, str],
        cookies: dict[str, str],
        seen: set[str],
    ) -> tuple[bool, Any]:
        if p.location == "query":
            seen.add(p.name)
            if p.shape.properties and p.style == "form" and p.explode and "object" in p.shape.types:
                seen.update(p.shape.properties)
            if p.content_media is not None:
                values = [v for k, v in pairs if k == p.name]
                return (False, None) if not values else deserialise_content(values[-1], p.content_media)
            return deserialise_query(p.name, pairs, p.shape, p.style, p.explode)
        if p.location == "path":
            raw = path_params.get(p.name)
        elif p.location == "header":
            raw = headers.get(p.name.lower())
        else:
            raw = cookies.get(p.name)
        if raw is None:
            return (False, None)
        if p.content_media is not None:
            return deserialise_content(raw, p.content_media)
        if p.style == "label":
            return (True, deserialise_label(raw, p.shape, p.explode))
        return (True, deserialise_simple(raw, p.shape, p.explode))

    def _media(self, media: str) -> BodyMedia | None:
        best: BodyMedia | None = None
        best_rank = -1
        for bm in self.bodies:
            d = bm.media
            if d == media:
                return bm
            major = d.split("/", 1)[0]
            if d == "*/*" and best_rank < 0:
                best, best_rank = bm, 0
            elif d.endswith("/*") and media.startswith(major + "/") and best_rank < 1:
                best, best_rank = bm, 1
        return best

    @staticmethod
    def _parse_body(bm: BodyMedia, body: bytes, content_type: str, limits: Limits) -> tuple[int, Any, list[FieldError]]:
        if bm.kind == "json":
            try:
                value = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                msg = "the body is not valid JSON"
                if "recursion" in str(exc).lower():
                    msg = f"the body is nested deeper than {limits.max_depth} levels"
                    return 422, None, [FieldError("body", "", "max_depth", msg)]
                return 400, None, [FieldError("body", "", "json", msg)]
            return 0, value, _limits(value, limits)
        if bm.kind == "form":
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                return 400, None, [FieldError("body", "", "encoding", "the form is not valid UTF-8")]
            return 0, _form(parse_qsl(text, keep_blank_values=True), bm.shape), []
        if bm.kind == "multipart":
            try:
                fields = _multipart(body, content_type)
            except ValueError as exc:
                return 400, None, [FieldError("body", "", "multipart", str(exc))]
            return 0, _form(fields, bm.shape), []
        return 0, None, []


def _form(pairs: list[tuple[str, str]], shape: Shape) -> dict[str, Any]:
    props = shape.properties or {}
    out: dict[str, Any] = {}
    for k, v in pairs:
        sub = props.get(k, ANY)
        if "array" in sub.types:
            out.setdefault(k, []).append(coerce(v, sub.items or ANY))
        else:
            out[k] = coerce(v, sub)
    return out


def _multipart(body: bytes, content_type: str) -> list[tuple[str, str]]:
    if "boundary=" not in content_type:
        raise ValueError("multipart body without a boundary")
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not msg.is_multipart():
        raise ValueError("the multipart body cannot be parsed")
    out: list[tuple[str, str]] = []
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise ValueError("a multipart part has no name")
        raw = part.get_payload(decode=True)
        payload = raw if isinstance(raw, bytes) else b""
        if part.get_filename() is not None:
            out.append((str(name), payload.decode("latin-1")))  # binary: only presence matters
        else:
            try:
                out.append((str(name), payload.decode("utf-8")))
            except UnicodeDecodeError:
                raise ValueError(f"the part {name!r} is not valid UTF-8") from None
    return out


def _limits(value: Any, limits: Limits) -> list[FieldError]:
    """Depth, array length, string length and property count, iteratively (no recursion)."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        v, depth, ptr = stack.pop()
        if isinstance(v, dict):
            if depth > limits.max_depth:
                return [FieldError("body", ptr, "max_depth", f"nested deeper than {limits.max_depth} levels")]
            if len(v) > limits.max_properties:
                return [FieldError("body", ptr, "max_properties", f"more than {limits.max_properties} properties")]
            for k, sub in v.items():
                if len(k) > limits.max_string_length:
                    return [FieldError("body", ptr, "max_string_length", "a property name is too long")]
                if isinstance(sub, (dict, list, str)):
                    stack.append((sub, depth + 1, ptr + "/" + k.replace("~", "~0").replace("/", "~1")))
        elif isinstance(v, list):
            if depth > limits.max_depth:
                return [FieldError("body", ptr, "max_depth", f"nested deeper than {limits.max_depth} levels")]
            if len(v) > limits.max_array_items:
                return [FieldError("body", ptr, "max_array_items", f"more than {limits.max_array_items} items")]
            for i, sub in enumerate(v):
                if isinstance(sub, (dict, list, str)):
                    stack.append((sub, depth + 1, f"{ptr}/{i}"))
        elif isinstance(v, str) and len(v) > limits.max_string_length:
            return [FieldError("body", ptr, "max_string_length", f"longer than {limits.max_string_length} characters")]
    return []


def _normalise(value: Any, how: Normalise, schema: Any) -> Any:
    """Trim / NFC every string; lower-case strings whose schema says `format: email`. Returns
    the same object when nothing changed."""
    emails = _email_paths(schema) if how.lowercase_email else set()

    def walk(v: Any, path: tuple[str, ...]) -> Any:
        if isinstance(v, str):
            s = v.strip() if how.trim else v
            if how.nfc:
                s = unicodedata.normalize("NFC", s)
            if path in emails:
                s = s.lower()
            return v if s == v else s
        if isinstance(v, dict):
            changed = False
            out = {}
            for k, sub in v.items():
                n = walk(sub, (*path, k))
                changed |= n is not sub
                out[k] = n
            return out if changed else v
        if isinstance(v, list):
            items = [walk(sub, (*path, "*")) for sub in v]
            return items if any(a is not b for a, b in zip(items, v, strict=False)) else v
        return v

    return walk(value, ())


def _email_paths(schema: Any) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    defs = schema.get("$defs", {}) if isinstance(schema, dict) else {}

    def walk(s: Any, path: tuple[str, ...], depth: int) -> None:
        if not isinstance(s, dict) or depth > 16:
            return
        if "$ref" in s:
            walk(defs.get(s["$ref"].rsplit("/", 1)[-1]), path, depth + 1)
        if s.get("format") == "email":
            found.add(path)
        for k, sub in (s.get("properties") or {}).items():
            walk(sub, (*path, k), depth + 1)
        if isinstance(s.get("items"), dict):
            walk(s["items"], (*path, "*"), depth + 1)
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in s.get(key, []):
                walk(sub, path, depth + 1)

    walk(schema, (), 0)
    return found


# ---------------------------------------------------------------------- compiling a spec
def _shape(spec: Spec, node: Any, base: Path, depth: int = 0) -> Shape:
    node, base = spec.deref(node, base)
    if not isinstance(node, dict) or depth > 8:
        return ANY
    t = node.get("type")
    types: set[str] = set()
    if isinstance(t, str):
        types.add(t)
    elif isinstance(t, list):
        types.update(x for x in t if isinstance(x, str))
    props = None
    if isinstance(node.get("properties"), dict):
        props = {k: _shape(spec, v, base, depth + 1) for k, v in node["properties"].items()}
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in node.get(key, []) or []:
            branch = _shape(spec, sub, base, depth + 1)
            types.update(branch.types)
            if key == "allOf" and branch.properties:  # every allOf branch applies: its properties too
                props = {**(props or {}), **branch.properties}
    if node.get("nullable") is True:
        types.add("null")
    if "properties" in node and not types:
        types.add("object")
    items = _shape(spec, node["items"], base, depth + 1) if isinstance(node.get("items"), dict) else None
    return Shape(frozenset(types), items, props)


def _media_kind(media: str) -> Literal["json", "form", "multipart", "other"]:
    if media == "application/json" or media.endswith("+json") or media in ("*/*", "application/*"):
        return "json" if media not in ("*/*", "application/*") else "other"
    if media == "application/x-www-form-urlencoded":
        return "form"
    if media == "multipart/form-data":
        return "multipart"
    return "other"


def _int_formats(schema: Any) -> Any:
    """`format: int32/int64` as bounds (JSON Schema has no such formats)."""
    if isinstance(schema, dict):
        if schema.get("format") in ("int32", "int64") and "integer" in (
            list(schema["type"]) if isinstance(schema.get("type"), list) else [schema.get("type")]
        ):
            bits = 31 if schema["format"] == "int32" else 63
            schema.setdefault("minimum", -(2**bits))
            schema.setdefault("maximum", 2**bits - 1)
        for v in schema.values():
            if isinstance(v, (dict, list)):
                _int_formats(v)
    elif isinstance(schema, list):
        for v in schema:
            _int_formats(v)
    return schema


def compile_operations(spec: Spec, *, close_objects: bool = True, responses: bool = False) -> dict[str, Operation]:
    """Every operation of the spec, by "METHOD /template"."""
    root = spec.root
    base = spec.path
    paths = root.get("paths") or {}
    global_security = root.get("security")
    req_conv = SchemaConverter(spec, "request", close_objects=close_objects)
    resp_conv = SchemaConverter(spec, "response", close_objects=False)
    ops: dict[str, Operation] = {}

    def validator(node: Any, where: Path, conv: SchemaConverter) -> Validator:
        conv.defs = {}
        schema = _int_formats(conv.convert(node, where))
        try:
            return Validator(schema)
        except Exception as exc:  # jsonschema-rs refuses the schema (a bad pattern, say)
            raise SpecError(str(where), f"a schema cannot be compiled: {str(exc).splitlines()[0]}") from None

    for template, item in paths.items():
        item, item_base = spec.deref(item, base)
        if not isinstance(item, dict):
            continue
        for seg in template.strip("/").split("/"):
            if "{" in seg and not _TEMPLATE_SEGMENT.fullmatch(seg):
                raise SpecError(
                    f"{base}#/paths/{template}", f"segment {seg!r}: bastion routes whole-segment parameters only"
                )
        shared = item.get("parameters") or []
        for method in HTTP_METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            where = f"{base}#/paths/{template}/{method}"
            merged: dict[tuple[str, str], tuple[dict[str, Any], Path]] = {}
            for raw in [*shared, *(op.get("parameters") or [])]:
                p, pbase = spec.deref(raw, item_base)
                merged[(p["name"], p["in"])] = (p, pbase)
            params: list[Param] = []
            for (name, loc), (p, pbase) in merged.items():
                default_style = {"query": "form", "cookie": "form"}.get(loc, "simple")
                style = p.get("style", default_style)
                if loc == "path" and style == "matrix":
                    raise SpecError(
                        where,
                        f"parameter {name!r}: matrix style cannot be checked "
                        "(bastion strips ;params from paths before routing)",
                    )
                explode = p.get("explode", style == "form")
                content_media = None
                schema_node = p.get("schema")
                if schema_node is None and isinstance(p.get("content"), dict) and p["content"]:
                    content_media, media_obj = next(iter(p["content"].items()))
                    schema_node = (media_obj or {}).get("schema")
                shape = _shape(spec, schema_node, pbase) if schema_node is not None else ANY
                v = validator(schema_node, pbase, req_conv) if schema_node is not None else None
                params.append(
                    Param(
                        name, loc, bool(p.get("required", loc == "path")), style, bool(explode), shape, v, content_media
                    )
                )
            bodies: list[BodyMedia] = []
            body_required = False
            rb = op.get("requestBody")
            if rb is not None:
                rb, rb_base = spec.deref(rb, item_base)
                body_required = bool(rb.get("required", False))
                for media, media_obj in (rb.get("content") or {}).items():
                    m = media.split(";", 1)[0].strip().lower()
                    kind = _media_kind(m)
                    schema_node = (media_obj or {}).get("schema")
                    v = None
                    shape = ANY
                    if schema_node is not None and kind != "other":
                        v = validator(schema_node, rb_base, req_conv)
                        shape = _shape(spec, schema_node, rb_base)
                    bodies.append(BodyMedia(m, kind, v, shape))
            security = op.get("security", global_security)
            ext = {k: v for k, v in op.items() if k.startswith("x-bastion-")}
            operation = Operation(
                method.upper(), template, op.get("operationId"), params, body_required, bodies, security, ext
            )
            if responses:
                for status, r in (op.get("responses") or {}).items():
                    r, r_base = spec.deref(r, item_base)
                    for media, media_obj in ((r or {}).get("content") or {}).items():
                        m = media.split(";", 1)[0].strip().lower()
                        schema_node = (media_obj or {}).get("schema")
                        if schema_node is None or _media_kind(m) != "json":
                            continue
                        v = validator(schema_node, r_base, resp_conv)
                        operation.responses.setdefault(str(status).upper(), {})[m] = ResponseSchema(v, v.schema)
            ops[operation.key] = operation
    return ops


def prune(value: Any, schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> tuple[Any, int]:
    """`value` without the object properties `schema` does not declare (and without writeOnly
    ones); returns (value, number of properties removed). Where the schema leaves an object open
    on purpose (`additionalProperties` is a schema), its extra properties stay."""
    if defs is None:
        defs = schema.get("$defs", {}) if isinstance(schema, dict) else {}
    if depth > 64 or not isinstance(schema, dict):
        return value, 0
    if "$ref" in schema:
        return prune(value, defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs, depth + 1)
    removed = 0
    if isinstance(value, dict):
        declared: dict[str, Any] = {}
        open_ = isinstance(schema.get("additionalProperties"), dict)
        pattern = bool(schema.get("patternProperties"))
        _collect(schema, defs, declared, depth)
        if not declared and "properties" not in schema and not any(k in schema for k in ("allOf", "anyOf", "oneOf")):
            return value, 0  # a free-form object: nothing declared to keep to
        out = {}
        for k, sub in value.items():
            if k in declared:
                s = declared[k]
                if isinstance(s, dict) and s.get("writeOnly") is True:
                    removed += 1
                    continue
                out[k], n = prune(sub, s, defs, depth + 1)
                removed += n
            elif open_ or pattern:
                out[k] = sub
            else:
                removed += 1
        return out, removed
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        out_list = []
        for item in value:
            v, n = prune(item, schema["items"], defs, depth + 1)
            out_list.append(v)
            removed += n
        return out_list, removed
    return value, 0


def _collect(schema: Any, defs: dict[str, Any], into: dict[str, Any], depth: int) -> None:
    if not isinstance(schema, dict) or depth > 64:
        return
    if "$ref" in schema:
        _collect(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs, into, depth + 1)
    for k, v in (schema.get("properties") or {}).items():
        into.setdefault(k, v)
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key, []) or []:
            _collect(sub, defs, into, depth + 1)
