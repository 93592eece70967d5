"""`bastion openapi lint`: security findings in a spec itself, before any traffic.

Each finding has a severity (high, medium, low, info), a JSON pointer into the document (file
and path) and the fix. What is checked: operations with no security requirement, API keys in
query strings, HTTP basic and the implicit/password OAuth flows, plain-http servers, object
schemas that accept unknown properties (mass assignment), strings and arrays without a bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from bastion.openapi.operations import compile_operations
from bastion.openapi.spec import HTTP_METHODS, Spec

SEVERITIES = ("high", "medium", "low", "info")
_BOUNDED_FORMATS = {"date", "date-time", "time", "uuid", "email", "ipv4", "ipv6", "byte", "int32", "int64"}
_SCHEMA_KEYS = ("type", "properties", "allOf", "anyOf", "oneOf", "$ref", "enum", "items", "const")


@dataclass(frozen=True)
class Finding:
    severity: str
    rule: str
    where: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _esc(part: Any) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")


def _schemas(node: Any, ptr: str, in_branch: bool = False) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """Every schema object under `node` (itself a schema), with its pointer and whether it is a
    branch of allOf/anyOf/oneOf (closing branches is the composing schema's job)."""
    if not isinstance(node, dict):
        return
    yield ptr, node, in_branch
    for key in ("properties", "patternProperties", "$defs", "definitions"):
        for name, sub in (node.get(key) or {}).items() if isinstance(node.get(key), dict) else ():
            yield from _schemas(sub, f"{ptr}/{key}/{_esc(name)}")
    for key in ("items", "additionalProperties", "not", "contains"):
        if isinstance(node.get(key), dict):
            yield from _schemas(node[key], f"{ptr}/{key}")
    for key in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(node.get(key) or []):
            yield from _schemas(sub, f"{ptr}/{key}/{i}", True)


def _schema_findings(schema: dict[str, Any], where: str, in_branch: bool) -> Iterator[Finding]:
    if "$ref" in schema or schema.get("readOnly"):
        return
    t = schema.get("type")
    types = set(t) if isinstance(t, list) else {t}
    objectish = "object" in types or "properties" in schema
    composed = any(k in schema for k in ("allOf", "anyOf", "oneOf"))
    if objectish and not in_branch and not composed:
        ap = schema.get("additionalProperties", True)
        if (
            ap is True
            and schema.get("unevaluatedProperties", True) is True
            and not schema.get("x-bastion-allow-unknown")
        ):
            yield Finding(
                "medium",
                "open-object",
                where,
                "object schema accepts properties it does not declare (mass assignment): add "
                "`additionalProperties: false` (bastion refuses them anyway unless "
                "`x-bastion-allow-unknown: true`)",
            )
    if (
        "string" in types
        and "maxLength" not in schema
        and "enum" not in schema
        and "const" not in schema
        and schema.get("format") not in _BOUNDED_FORMATS
        and "pattern" not in schema
    ):
        yield Finding("low", "unbounded-string", where, "string without maxLength")
    if "array" in types and "maxItems" not in schema:
        yield Finding("medium", "unbounded-array", where, "array without maxItems (resource consumption)")


def lint_spec(spec: Spec) -> list[Finding]:
    root = spec.root
    base = spec.path.name
    out: list[Finding] = []
    compile_operations(spec)  # loads every referenced file (and fails clearly on a broken spec)

    for i, server in enumerate(root.get("servers") or []):
        url = str((server or {}).get("url", ""))
        parts = urlsplit(url)
        if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
            out.append(
                Finding(
                    "high",
                    "plain-http-server",
                    f"{base}#/servers/{i}",
                    f"server {url} is plain http: credentials and data travel unencrypted",
                )
            )
    schemes = (root.get("components") or {}).get("securitySchemes") or {}
    for name, sc in schemes.items():
        sc, _ = spec.deref(sc, spec.path)
        where = f"{base}#/components/securitySchemes/{_esc(name)}"
        if sc.get("type") == "apiKey" and sc.get("in") == "query":
            out.append(
                Finding(
                    "high",
                    "api-key-in-query",
                    where,
                    f"API key {sc.get('name')!r} travels in the query string (logged by proxies "
                    "and kept in browser history): use a header",
                )
            )
        if sc.get("type") == "http" and str(sc.get("scheme", "")).lower() == "basic":
            out.append(Finding("medium", "http-basic", where, "HTTP basic sends the password with every request"))
        for flow in ("implicit", "password"):
            if flow in ((sc.get("flows") or {}) if sc.get("type") == "oauth2" else {}):
                out.append(
                    Finding(
                        "high",
                        f"oauth2-{flow}-flow",
                        f"{where}/flows/{flow}",
                        f"the OAuth 2.0 {flow} flow is deprecated (OAuth 2.0 Security BCP): "
                        "use authorization code with PKCE",
                    )
                )
    global_security = root.get("security")
    for template, item in (root.get("paths") or {}).items():
        item, _ = spec.deref(item, spec.path)
        for method in HTTP_METHODS:
            op = item.get(method) if isinstance(item, dict) else None
            if not isinstance(op, dict):
                continue
            where = f"{base}#/paths/{_esc(template)}/{method}"
            security = op.get("security", global_security)
            if security is None:
                out.append(
                    Finding(
                        "high",
                        "no-security",
                        where,
                        "no security requirement: in OpenAPI's semantics anyone can call it (say `security: []` "
                        "if that is intended; behind bastion it needs a credential unless the route sets "
                        "`default_security: public`)",
                    )
                )
            elif security == [] or any(alt == {} for alt in security):
                out.append(Finding("info", "public-operation", where, "public on purpose (`security: []`)"))
    for path, doc in spec.documents.items():
        label = path.name
        if path == spec.path:
            roots: list[tuple[str, Any]] = [
                (f"/components/schemas/{_esc(k)}", v)
                for k, v in ((root.get("components") or {}).get("schemas") or {}).items()
            ]
            roots += list(_inline_schemas(root))
        elif isinstance(doc, dict):
            roots = [
                (f"/{_esc(k)}", v) for k, v in doc.items() if isinstance(v, dict) and any(s in v for s in _SCHEMA_KEYS)
            ]
        else:
            continue
        for ptr, schema in roots:
            for sub_ptr, node, branch in _schemas(schema, ptr):
                out.extend(_schema_findings(node, f"{label}#{sub_ptr}", branch))
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(out, key=lambda f: (order[f.severity], f.where))


def _inline_schemas(root: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for template, item in (root.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        t = _esc(template)
        for i, p in enumerate(item.get("parameters") or []):
            if isinstance(p, dict) and isinstance(p.get("schema"), dict):
                yield f"/paths/{t}/parameters/{i}/schema", p["schema"]
        for method in HTTP_METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            for i, p in enumerate(op.get("parameters") or []):
                if isinstance(p, dict) and isinstance(p.get("schema"), dict):
                    yield f"/paths/{t}/{method}/parameters/{i}/schema", p["schema"]
            rb = op.get("requestBody")
            if isinstance(rb, dict):
                for media, m in (rb.get("content") or {}).items():
                    if isinstance((m or {}).get("schema"), dict):
                        yield f"/paths/{t}/{method}/requestBody/content/{_esc(media)}/schema", m["schema"]


def at_or_above(findings: list[Finding], severity: str) -> list[Finding]:
    limit = SEVERITIES.index(severity)
    return [f for f in findings if SEVERITIES.index(f.severity) <= limit]
