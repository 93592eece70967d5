"""Render docs/config.md from the config models, so every key is documented where it is defined."""

from __future__ import annotations

from collections import abc
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from bastion.config.model import GatewayConfig
from bastion.policies import REGISTRY

HEADER = """\
# Configuration reference

Generated from the config models by `python -m bastion.config.docs > docs/config.md`; a test
fails when this file and the models disagree. Every key below is validated when the file loads:
an unknown key or a bad value stops `bastion serve` / `bastion check` with the key's path and
line. Strings may use `${VAR}` or `${VAR:-default}` to read the environment (for secrets).
"""


def _discriminator(metadata: Any) -> str | None:
    for m in metadata:
        d = getattr(m, "discriminator", None)
        if isinstance(d, str):
            return d
    return None


def _tag(model: type[BaseModel], discriminator: str | None) -> str | None:
    """The value of the discriminator field that selects `model` in a union."""
    if discriminator is None or discriminator not in model.model_fields:
        return None
    values = get_args(model.model_fields[discriminator].annotation)
    return ", ".join(str(v) for v in values) or None


def _models_in(annotation: Any, suffix: str = "", disc: str | None = None) -> list[tuple[type[BaseModel], str, str]]:
    """Every model an annotation can hold, however nested in lists, maps, unions and
    `Annotated`: (model, path suffix such as `[]` or `.<name>`, what selects it in a union)."""
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        tag = _tag(annotation, disc)
        return [(annotation, suffix, f" with `{disc}: {tag}`" if tag else "")]
    if origin is Annotated:
        inner, *meta = get_args(annotation)
        return _models_in(inner, suffix, _discriminator(meta) or disc)
    if origin in (Union, UnionType):
        return [m for arg in get_args(annotation) for m in _models_in(arg, suffix, disc)]
    if origin in (list, tuple, set, frozenset, abc.Sequence):
        return [m for arg in get_args(annotation) if arg is not Ellipsis for m in _models_in(arg, suffix + "[]", disc)]
    if origin in (dict, abc.Mapping):
        args = get_args(annotation)
        return _models_in(args[1], suffix + ".<name>", disc) if len(args) == 2 else []
    return []


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return ""
        if isinstance(value, BaseModel):
            return "(section)"
        return f"`{value!r}`"
    if field.default is PydanticUndefined:
        return "**required**"
    return f"`{field.default!r}`"


_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def _readable(annotation: Any) -> str:
    """A type as a reader of YAML thinks of it: `list of string`, `map of name → object`,
    `` `a` or `b` ``, `object (below)`, never a Python repr."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is Any:
        return "any"
    if annotation in _NAMES:
        return _NAMES[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object (below)"
    if isinstance(annotation, type):
        return {"datetime": "date-time (ISO 8601)"}.get(annotation.__name__, annotation.__name__)
    if origin is Annotated:
        inner, *meta = args
        text = _readable(inner)
        disc = _discriminator(meta)
        if disc is not None:
            tags = [t for _, _, t in _models_in(inner, "", disc)]
            return f"object chosen by `{disc}` (below:{','.join(t.removeprefix(' with') for t in tags)})"
        return text
    if origin is Literal:
        return " or ".join(f"`{a}`" for a in args)
    if origin in (Union, UnionType):
        parts = [_readable(a) for a in args if a is not type(None)]
        text = " or ".join(dict.fromkeys(parts))
        if type(None) not in args:
            return text
        return (f"({text})" if " or " in text or " of " in text else text) + " or null"
    if origin in (list, tuple, set, frozenset, abc.Sequence):
        inner = " or ".join(_readable(a) for a in args if a is not Ellipsis) or "any"
        return "list of " + (f"({inner})" if " or " in inner else inner)
    if origin in (dict, abc.Mapping) and len(args) == 2:
        key = "name" if args[0] is str else _readable(args[0])
        value = _readable(args[1])
        return f"map of {key} → " + (f"({value})" if " or " in value and not value.startswith("object") else value)
    return str(annotation).replace("typing.", "")


def _type(field: FieldInfo) -> str:
    annotation: Any = field.annotation
    if field.discriminator is not None:  # `Field(discriminator=...)` on the field itself
        annotation = Annotated[annotation, field]
    return _readable(annotation).replace("|", "\\|")


def _table(model: type[BaseModel], prefix: str, lines: list[str], seen: set[str], tag: str = "") -> None:
    lines.append(f"\n## `{prefix}`{tag}\n")
    if model.__doc__ and model is not GatewayConfig:
        lines.append(model.__doc__.strip().splitlines()[0] + "\n")
    lines.append("| key | type | default | meaning |\n|---|---|---|---|")
    nested = []
    for name, field in model.model_fields.items():
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{name}` | {_type(field)} | {_default(field)} | {desc} |")
        annotation: Any = field.annotation
        if field.discriminator is not None:
            annotation = Annotated[annotation, field]
        for sub, suffix, sub_tag in _models_in(annotation):
            if sub.__name__ in ("PoliciesConfig",):
                continue
            base = "" if prefix == "(top level)" else prefix + "."
            nested.append((sub, f"{base}{name}{suffix}", sub_tag))
    for sub, path, sub_tag in nested:
        if sub.__name__ not in seen:
            seen.add(sub.__name__)
            _table(sub, path, lines, seen, sub_tag)


def render() -> str:
    lines = [HEADER]
    seen = {"GatewayConfig"}
    _table(GatewayConfig, "(top level)", lines, seen)
    lines.append(
        "\n# Policies\n\nEach policy is configured under `policies.<name>` (defaults for "
        "every route) and may be overridden per route under `routes[].policies.<name>`; "
        "a route's keys are merged over the defaults. `enabled: false` turns a policy "
        "off for a route. Policies marked *default on* run without any config.\n"
    )
    for name, cls in REGISTRY.items():
        flags = []
        if cls.default_on:
            flags.append("default on")
        if not cls.per_route:
            flags.append("global only (routes cannot override it)")
        if cls.unrouted:
            flags.append("also runs for requests no route matches")
        doc = (cls.__module__ and __import__(cls.__module__, fromlist=["_"]).__doc__ or "").strip()
        lines.append(f"\n## `policies.{name}` — priority {cls.priority}" + (f" ({', '.join(flags)})" if flags else ""))
        if doc:
            lines.append("\n" + doc.splitlines()[0])
        sub: list[str] = []
        _table(cls.Config, f"policies.{name}", sub, set())
        lines.extend(sub[1:])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
