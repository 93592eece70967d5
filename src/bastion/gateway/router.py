"""The router: compiled once from the config; the most specific route wins.

Specificity, compared segment by segment: a literal beats `{param}`, which beats a trailing
`*`; a route with a host beats one without. `/a` and `/a/` match the same routes, so a trailing
slash (or `/a/.`) can never reach a route that `/a` would not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import unquote

T = TypeVar("T")

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(slots=True)
class Route(Generic[T]):
    name: str
    pattern: str
    methods: frozenset[str] | None
    host: str | None
    target: T  # what the gateway attaches: pipeline, upstream, ...
    case_sensitive: bool = True
    regex: re.Pattern[str] = field(init=False)
    host_regex: re.Pattern[str] | None = field(init=False)
    specificity: tuple[Any, ...] = field(init=False)

    def __post_init__(self) -> None:
        segs = [s for s in self.pattern.split("/") if s]
        parts, ranks, wildcard = [], [], False
        for seg in segs:
            m = _PARAM.fullmatch(seg)
            if seg == "*":
                wildcard = True
            elif m:
                parts.append("/(?P<%s>[^/]+)" % m.group(1))
                ranks.append(2)
            else:
                parts.append("/" + re.escape(seg))
                ranks.append(3)
        body = "".join(parts)
        tail = "(?:/.*)?" if wildcard else "/?"
        flags = 0 if self.case_sensitive else re.IGNORECASE
        self.regex = re.compile((body or "") + tail if body else ("(?:/.*)?" if wildcard else "/"), flags)
        if self.host:
            h = re.escape(self.host.lower()).replace(r"\*", r"[a-z0-9-]+")
            self.host_regex = re.compile(h)
        else:
            self.host_regex = None
        host_rank = 0 if self.host is None else (1 if "*" in self.host else 2)
        self.specificity = (host_rank, tuple(ranks), 0 if wildcard else 1, self.methods is not None)


@dataclass(slots=True)
class Match(Generic[T]):
    route: Route[T] | None
    params: dict[str, str]
    allowed: frozenset[str]  # methods of routes that matched the path (for 405)


class Router(Generic[T]):
    def __init__(self, routes: list[Route[T]]) -> None:
        self.routes = sorted(routes, key=lambda r: r.specificity, reverse=True)

    def match(self, method: str, path: str, host: str) -> Match[T]:
        """The route for this request; only routes of the most specific matching path pattern
        compete on method, so a method missing there is a 405 and never falls through to a
        broader route (`POST /admin` cannot slip into `/*` because `/admin` is GET-only)."""
        host = host.lower().rsplit(":", 1)[0] if not host.startswith("[") else host.lower()
        host = host.rstrip(".")  # `admin.example.` is `admin.example` (a fully qualified name)
        want = "GET" if method == "HEAD" else method
        allowed: set[str] = set()
        best: tuple[Any, ...] | None = None
        for route in self.routes:
            if best is not None and route.specificity[:3] != best:
                break
            if route.host_regex is not None and route.host_regex.fullmatch(host) is None:
                continue
            m = route.regex.fullmatch(path)
            if m is None:
                continue
            best = route.specificity[:3]
            if route.methods is None or method in route.methods or want in route.methods:
                # parameters are decoded for policies (an object rule compares them with claims);
                # an encoded '/' never got this far, so a value is always one whole segment
                params = {k: unquote(v) if "%" in v else v for k, v in m.groupdict().items()}
                return Match(route, params, frozenset())
            allowed.update(route.methods)
        if "GET" in allowed:
            allowed.add("HEAD")
        return Match(None, {}, frozenset(allowed))
