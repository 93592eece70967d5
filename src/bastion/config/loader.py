"""Load a YAML config and report every error with its key path and file line."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from bastion.config.model import GatewayConfig, cross_checks


@dataclass
class ConfigIssue:
    loc: tuple[Any, ...]
    line: int | None
    message: str

    def render(self, source: str) -> str:
        key = format_loc(self.loc) or "(top level)"
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {key}: {self.message}"


class ConfigError(Exception):
    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__("\n".join(i.render(source) for i in issues))


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(text: str, source: str) -> str:
    """`${VAR}` and `${VAR:-default}` in the file are replaced from the environment."""

    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value is None:
            if m.group(2) is None:
                line = text.count("\n", 0, m.start()) + 1
                raise ConfigError(source, [ConfigIssue((), line, f"environment variable {m.group(1)} is not set")])
            return m.group(2)
        return value

    return _ENV.sub(sub, text)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest YAML node that `loc` reaches."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == part:
                    child = v if not isinstance(v, yaml.ScalarNode) else v
                    line = k.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                child = node.value[part]
                line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def _duplicate_keys(node: yaml.Node | None, path: tuple[Any, ...] = ()) -> list[ConfigIssue]:
    """YAML lets a later key silently replace an earlier one; in a security config that hides
    mistakes (a second `auth:` block wins), so duplicates are errors."""
    issues: list[ConfigIssue] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            if key is not None and key in seen:
                issues.append(
                    ConfigIssue(path + (key,), k.start_mark.line + 1, "duplicate key (the first would be ignored)")
                )
            seen.add(key)
            issues.extend(_duplicate_keys(v, path + (key,)))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            issues.extend(_duplicate_keys(item, path + (i,)))
    return issues


def load_config_text(text: str, source: str = "<config>", *, proxy: bool = True) -> GatewayConfig:
    text = _expand_env(text, source)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(source, [ConfigIssue((), line, f"not valid YAML: {exc}")]) from None
    duplicates = _duplicate_keys(node)
    if duplicates:
        raise ConfigError(source, duplicates)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigIssue((), 1, "the config must be a mapping of sections")])
    try:
        cfg = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            issues.append(ConfigIssue(loc, _line_of(node, loc), msg))
        raise ConfigError(source, issues) from None
    problems = cross_checks(cfg, proxy=proxy)
    if problems:
        raise ConfigError(source, [ConfigIssue(loc, _line_of(node, loc), msg) for loc, msg in problems])
    return cfg


def load_config(path: str, *, proxy: bool = True) -> GatewayConfig:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(path, [ConfigIssue((), None, f"cannot read the config: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(path, [ConfigIssue((), None, "the config is not UTF-8 text")]) from None
    return load_config_text(text, path, proxy=proxy)
