"""What to scan: the operations of the target's OpenAPI document (given, or found at the usual
places), or — without one — a built-in list of common API paths that answer."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

from bastion.scanner.client import ScanClient
from bastion.scanner.model import Operation

SPEC_PATHS = (
    "/openapi.json",
    "/openapi.yaml",
    "/swagger.json",
    "/v3/api-docs",
    "/api/openapi.json",
    "/api/swagger.json",
    "/api-docs",
    "/docs/openapi.json",
    "/v2/api-docs",
)
COMMON_PATHS = (
    "/api/users",
    "/api/v1/users",
    "/api/v2/users",
    "/users",
    "/api/products",
    "/api/orders",
    "/api/me",
    "/me",
    "/api/health",
    "/health",
    "/api/admin",
    "/admin",
)
METHODS = ("get", "put", "post", "delete", "patch")


def parse_spec(text: bytes | str) -> dict[str, Any] | None:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return doc if isinstance(doc, dict) and ("openapi" in doc or "swagger" in doc) else None


async def find_spec(client: ScanClient, given: str | None) -> tuple[dict[str, Any] | None, str | None]:
    if given:
        if given.startswith("http"):
            r = await client.request("GET", given)
            return parse_spec(r.body), given
        with open(given, "rb") as f:
            return parse_spec(f.read()), given
    for path in SPEC_PATHS:
        r = await client.request("GET", path, record=False)
        if r.ok:
            spec = parse_spec(r.body)
            if spec is not None:
                return spec, client.url(path)
    return None, None


def base_path(spec: dict[str, Any]) -> str:
    if "swagger" in spec:  # Swagger 2.0: basePath
        return str(spec.get("basePath") or "").rstrip("/")
    for server in spec.get("servers") or []:
        url = str((server or {}).get("url", ""))
        parts = urlsplit(url)
        if not parts.netloc or parts.hostname in ("localhost", "127.0.0.1"):
            return parts.path.rstrip("/")
    servers = spec.get("servers") or []
    return urlsplit(str(servers[0].get("url", ""))).path.rstrip("/") if servers else ""


def deref(spec: dict[str, Any], node: Any, depth: int = 0) -> Any:
    """The node with local `$ref`s replaced by what they point to (bounded: a cycle stops after 8 refs)."""
    if depth > 8:
        return {}
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = spec
            for part in ref[2:].split("/"):
                target = target.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(target, dict) else {}
            return deref(spec, target, depth + 1)
        return {k: deref(spec, v, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [deref(spec, v, depth) for v in node]
    return node


def operations(spec: dict[str, Any]) -> list[Operation]:
    base = base_path(spec)
    spec = {**spec, "paths": deref(spec, spec.get("paths") or {})}
    global_sec = spec.get("security")
    out = []
    for template, item in (spec.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        shared = [p for p in item.get("parameters") or [] if isinstance(p, dict)]
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            params = shared + [p for p in op.get("parameters") or [] if isinstance(p, dict)]
            params = [
                p
                if "schema" in p or p.get("in") == "body"
                else {**p, "schema": {k: p[k] for k in ("type", "format", "enum", "pattern") if k in p}}
                for p in params
            ]  # Swagger 2.0 puts the type on the parameter itself
            body = None
            form = False
            content = (op.get("requestBody") or {}).get("content") or {}
            in_body = next((p for p in params if p.get("in") == "body"), None)  # Swagger 2.0
            in_form = [p for p in params if p.get("in") == "formData"]
            if in_body is not None:
                body = in_body.get("schema") or {}
            elif in_form:
                body = {
                    "type": "object",
                    "properties": {
                        p["name"]: {
                            k: v for k, v in p.items() if k in ("type", "format", "enum", "pattern", "maxLength")
                        }
                        for p in in_form
                        if "name" in p
                    },
                    "required": [p["name"] for p in in_form if p.get("required") and "name" in p],
                }
                form = "application/json" not in (op.get("consumes") or spec.get("consumes") or [])
            elif "application/json" in content:
                body = (content["application/json"] or {}).get("schema") or {}
            elif "application/x-www-form-urlencoded" in content:
                body = (content["application/x-www-form-urlencoded"] or {}).get("schema") or {}
                form = True
            security = op.get("security", global_sec)
            secured = bool(security) and not any(alt == {} for alt in security or ())
            out.append(Operation(method.upper(), base + template, params, body, secured, form=form))
    return out


GRAPHQL_PATHS = ("/graphql", "/api/graphql", "/graphql/v1", "/v1/graphql", "/query", "/gql")


async def find_graphql(client: ScanClient) -> str | None:
    """Without --graphql: the first usual path where `{ __typename }` is answered as GraphQL."""
    for path in GRAPHQL_PATHS:
        r = await client.request("POST", path, json={"query": "{ __typename }"}, record=False)
        doc = r.json() if r.status and r.status < 500 else None
        if isinstance(doc, dict) and isinstance(doc.get("data"), dict) and "__typename" in doc["data"]:
            return path
    return None


async def crawl(client: ScanClient) -> list[Operation]:
    found = []
    for path in COMMON_PATHS:
        r = await client.request("GET", path, record=False)
        if r.status and r.status != 404:
            found.append(Operation("GET", path, [], None, r.status in (401, 403), documented=False))
    return found
