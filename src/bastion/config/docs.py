"""Render docs/config.md from the config models, so every key is documented where it is defined."""

from __future__ import annotations

from typing import Any, get_args

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


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    out = []
    for arg in (annotation, *get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            out.append(arg)
        else:
            for inner in get_args(arg):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    out.append(inner)
    return out


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


def _type(field: FieldInfo) -> str:
    text = str(field.annotation).replace("typing.", "")
    for name in ("bastion.config.model.", "bastion.policies.", "<class '", "'>"):
        text = text.replace(name, "")
    return text.replace("|", "or")


def _table(model: type[BaseModel], prefix: str, lines: list[str], seen: set[str]) -> None:
    lines.append(f"\n## `{prefix}`\n")
    if model.__doc__ and model is not GatewayConfig:
        lines.append(model.__doc__.strip().splitlines()[0] + "\n")
    lines.append("| key | type | default | meaning |\n|---|---|---|---|")
    nested = []
    for name, field in model.model_fields.items():
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{name}` | {_type(field)} | {_default(field)} | {desc} |")
        for sub in _models_in(field.annotation):
            if sub.__name__ in ("PoliciesConfig",):
                continue
            ann = str(field.annotation)
            suffix = "[]" if ann.startswith("list") else (".<name>" if ann.startswith("dict") else "")
            base = "" if prefix == "(top level)" else prefix + "."
            nested.append((sub, f"{base}{name}{suffix}"))
    for sub, path in nested:
        if sub.__name__ not in seen:
            seen.add(sub.__name__)
            _table(sub, path, lines, seen)


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
