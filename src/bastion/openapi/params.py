"""Parameters as OpenAPI serialises them (`style`, `explode`), turned back into JSON values.

Values arrive as strings; the schema says what they should be, so "42" becomes 42 where an
integer is declared and stays "42" where a string is. A value that does not parse as the
declared type is left a string and the schema check reports the type error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

_INT = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")
_NUM = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?\Z")


@dataclass(frozen=True, slots=True)
class Shape:
    """What a parameter's schema expects, as far as turning strings into values needs."""

    types: frozenset[str]  # JSON types the schema admits (empty: anything)
    items: Shape | None = None
    properties: dict[str, Shape] | None = None


ANY = Shape(frozenset())


def coerce(text: str, shape: Shape) -> Any:
    t = shape.types
    if not t or "string" in t:
        return text
    if "integer" in t and _INT.match(text):
        return int(text)
    if "number" in t and _NUM.match(text):
        return float(text) if any(c in text for c in ".eE") else int(text)
    if "boolean" in t and text in ("true", "false"):
        return text == "true"
    if "null" in t and text in ("", "null"):
        return None
    return text


def _items(values: list[str], shape: Shape) -> list[Any]:
    inner = shape.items or ANY
    return [coerce(v, inner) for v in values]


def _pairs(values: list[str], shape: Shape) -> dict[str, Any] | list[str]:
    if len(values) % 2:
        return values  # not an object serialisation: the schema check says so
    props = shape.properties or {}
    return {values[i]: coerce(values[i + 1], props.get(values[i], ANY)) for i in range(0, len(values), 2)}


def _kv(parts: list[str], shape: Shape) -> dict[str, Any] | list[str]:
    props = shape.properties or {}
    out: dict[str, Any] = {}
    for part in parts:
        if "=" not in part:
            return parts
        k, v = part.split("=", 1)
        out[k] = coerce(v, props.get(k, ANY))
    return out


def deserialise_simple(text: str, shape: Shape, explode: bool, sep: str = ",") -> Any:
    """`simple` (path, header) and the one-value forms of `form`/`label`."""
    if "array" in shape.types and "string" not in shape.types:
        return _items(text.split(sep) if text else [], shape)
    if "object" in shape.types:
        parts = text.split(sep) if text else []
        return _kv(parts, shape) if explode else _pairs(parts, shape)
    return coerce(text, shape)


def deserialise_query(
    name: str, pairs: list[tuple[str, str]], shape: Shape, style: str, explode: bool
) -> tuple[bool, Any]:
    """(present, value) of a query parameter from all the query's (name, value) pairs."""
    if style == "deepObject":
        prefix = name + "["
        props = shape.properties or {}
        obj: dict[str, Any] = {}
        for k, v in pairs:
            if k.startswith(prefix) and k.endswith("]"):
                key = k[len(prefix) : -1]
                obj[key] = coerce(v, props.get(key, ANY))
        return (bool(obj), obj)
    if "object" in shape.types and style == "form" and explode:
        # each property is its own query parameter
        props = shape.properties or {}
        obj = {k: coerce(v, props[k]) for k, v in pairs if k in props}
        return (bool(obj), obj)
    values = [v for k, v in pairs if k == name]
    if not values:
        return (False, None)
    if "array" in shape.types and "string" not in shape.types:
        if explode and style == "form":
            return (True, _items(values, shape))
        sep = {"form": ",", "spaceDelimited": " ", "pipeDelimited": "|"}.get(style, ",")
        return (True, _items(values[-1].split(sep) if values[-1] else [], shape))
    if "object" in shape.types:
        return (True, _pairs(values[-1].split(",") if values[-1] else [], shape))
    return (True, coerce(values[-1], shape))


def deserialise_label(text: str, shape: Shape, explode: bool) -> Any:
    if not text.startswith("."):
        return text
    body = text[1:]
    sep = "." if explode else ","
    return deserialise_simple(body, shape, explode, sep)


def deserialise_content(text: str, media: str) -> tuple[bool, Any]:
    """A parameter declared with `content` (JSON in a query parameter, typically)."""
    if media == "application/json" or media.endswith("+json"):
        try:
            return (True, orjson.loads(text))
        except orjson.JSONDecodeError:
            return (False, None)
    return (True, text)
