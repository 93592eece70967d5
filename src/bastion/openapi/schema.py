"""OpenAPI schemas turned into self-contained JSON Schema 2020-12 documents.

One conversion does four jobs, because each needs to know where a schema is used:
- OpenAPI 3.0's dialect becomes JSON Schema (`nullable`, boolean `exclusiveMinimum`, ...);
  3.1 schemas already are JSON Schema and pass through;
- every `$ref` (same file or another file) becomes an entry of `$defs`, so recursive schemas work
  and each named schema is compiled once per document;
- mass-assignment protection: in a request, an object schema that does not say otherwise
  refuses properties it does not declare. A schema that is a branch of `allOf`/`anyOf`/`oneOf`
  is left open and the composing schema gets `unevaluatedProperties: false` instead (closing
  each branch would refuse the properties of its siblings). `x-bastion-allow-unknown: true`
  on a schema keeps it open;
- direction: `readOnly` properties are refused in requests (and not required there), `writeOnly`
  properties are not required in responses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from bastion.openapi.spec import Spec, SpecError

Direction = Literal["request", "response"]

# OpenAPI keywords with no JSON Schema meaning (or whose meaning we apply ourselves).
_DROP = {"nullable", "discriminator", "xml", "externalDocs", "example", "deprecated", "x-bastion-allow-unknown"}
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_ONE = (
    "additionalProperties",
    "items",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "additionalItems",
)
_BRANCHES = ("allOf", "anyOf", "oneOf")
_CONDITIONAL = ("not", "if", "then", "else")


class SchemaConverter:
    """Converts the schemas of one spec; shares `$defs` across everything it converts."""

    def __init__(self, spec: Spec, direction: Direction, *, close_objects: bool = True) -> None:
        self.spec = spec
        self.direction = direction
        self.close_objects = close_objects and direction == "request"
        self.defs: dict[str, Any] = {}
        self._names: dict[tuple[Path, str], str] = {}
        self._pending: list[tuple[str, Path, str, Any, bool]] = []

    def convert(self, node: Any, base: Path) -> dict[str, Any] | bool:
        """A standalone 2020-12 schema (with the `$defs` it needs) for `node`, written in `base`."""
        out = self._conv(node, base, True)
        while self._pending:
            name, path, _, target, closed = self._pending.pop()
            self.defs[name] = self._conv(target, path, closed)
        if isinstance(out, bool):
            return out
        if self.defs:
            out = {**out, "$defs": dict(self.defs)}
        return out

    # --------------------------------------------------------------------- conversion
    def _ref(self, ref: str, base: Path, closed: bool) -> str:
        path, pointer, target = self.spec.resolve(ref, base)
        key = (path, pointer)
        stem = self._names.get(key)
        if stem is None:
            tail = pointer.rsplit("/", 1)[-1] or path.stem
            stem = re.sub(r"[^A-Za-z0-9_.-]", "_", tail) or "schema"
            while stem in self._names.values():
                stem += "_"
            self._names[key] = stem
        name = stem if closed else stem + "~open"
        if name not in self.defs:
            self.defs[name] = {}  # reserve (recursion)
            self._pending.append((name, path, pointer, target, closed))
        return "#/$defs/" + name

    def _conv(self, node: Any, base: Path, closed: bool) -> Any:
        if isinstance(node, bool):
            return node
        if not isinstance(node, dict):
            raise SpecError(str(base), f"a schema is an object, got {type(node).__name__}")
        if "$ref" in node and isinstance(node["$ref"], str):
            ref = {"$ref": self._ref(node["$ref"], base, closed)}
            if self.spec.version == "3.0" or len(node) == 1:
                return ref  # 3.0: siblings of $ref are ignored
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {"allOf": [ref, self._conv(rest, base, False)]}
        out: dict[str, Any] = {}
        v30 = self.spec.version == "3.0"
        for key, value in node.items():
            if key in _DROP or (key.startswith("x-") and v30):
                continue
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {k: self._conv(v, base, True) for k, v in value.items()}
            elif key in _SCHEMA_ONE and isinstance(value, (dict, bool)):
                out[key] = self._conv(value, base, True)
            elif key == "prefixItems" and isinstance(value, list):
                out[key] = [self._conv(v, base, True) for v in value]
            elif key == "items" and isinstance(value, list):  # draft-04 tuple form
                out["prefixItems"] = [self._conv(v, base, True) for v in value]
            elif key in _BRANCHES and isinstance(value, list):
                out[key] = [self._conv(v, base, False) for v in value]
            elif key in _CONDITIONAL and isinstance(value, (dict, bool)):
                out[key] = self._conv(value, base, False)
            else:
                out[key] = value
        if v30:
            self._from_30(node, out)
        self._direction(node, base, out)
        if closed and self.close_objects and not node.get("x-bastion-allow-unknown"):
            self._close(out)
        return out

    @staticmethod
    def _from_30(node: dict[str, Any], out: dict[str, Any]) -> None:
        if node.get("nullable") is True:
            t = out.get("type")
            if isinstance(t, str):
                out["type"] = [t, "null"]
            elif "type" not in out:
                pass  # no type: null already allowed
            if isinstance(out.get("enum"), list) and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
            for key in _BRANCHES:
                if key in out and key != "allOf":
                    out[key] = [*out[key], {"type": "null"}]
            if "allOf" in out and "anyOf" not in out:
                out["anyOf"] = [{"type": "null"}, {"allOf": out.pop("allOf")}]
        for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            flag = node.get(bound)
            if flag is True and limit in node:
                out[bound] = node[limit]
                out.pop(limit, None)
            elif flag is False:
                out.pop(bound, None)

    def _direction(self, node: dict[str, Any], base: Path, out: dict[str, Any]) -> None:
        props = node.get("properties")
        if not isinstance(props, dict):
            return
        hidden = "readOnly" if self.direction == "request" else "writeOnly"
        skip: set[str] = set()
        for name, sub in props.items():
            target, _ = self.spec.deref(sub, base)
            if isinstance(target, dict) and target.get(hidden) is True:
                skip.add(name)
                if self.direction == "request":
                    out["properties"][name] = False  # present in a request: refused
        if skip and isinstance(out.get("required"), list):
            out["required"] = [r for r in out["required"] if r not in skip]

    @staticmethod
    def _close(out: dict[str, Any]) -> None:
        composed = any(k in out for k in _BRANCHES) or "$ref" in out
        objectish = (
            out.get("type") == "object"
            or (isinstance(out.get("type"), list) and "object" in out["type"])
            or "properties" in out
        )
        if composed:
            if "unevaluatedProperties" not in out and out.get("additionalProperties", True) is True:
                out.pop("additionalProperties", None)
                out["unevaluatedProperties"] = False
        elif objectish and "patternProperties" not in out and out.get("additionalProperties", True) is True:
            out["additionalProperties"] = False
