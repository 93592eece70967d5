"""Loading an OpenAPI document: YAML or JSON, local and relative-file `$ref`s, the document
itself validated (openapi-spec-validator) with an error that names the place.

Documents are cached per file and modification time, so a gateway with one route per operation
loads and validates a spec once per (re)load.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag

import orjson
import yaml

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class SpecError(ValueError):
    """A spec that cannot be used, with where (file and JSON pointer) and why."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


class _NoDuplicates(yaml.SafeLoader):
    pass


def _mapping(loader: _NoDuplicates, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise SpecError(f"line {key_node.start_mark.line + 1}", f"duplicate key {key!r}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_NoDuplicates.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
# YAML 1.1 would turn `2024-01-01` into a date and `on` into True; OpenAPI documents are JSON.
_NoDuplicates.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_document(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(str(path), f"cannot be read ({exc.strerror or exc})") from None
    try:
        if path.suffix.lower() == ".json":
            return orjson.loads(raw)
        return yaml.load(raw, Loader=_NoDuplicates)  # noqa: S506 (a SafeLoader subclass)
    except SpecError as exc:
        raise SpecError(f"{path} {exc.where}", exc.message) from None
    except (orjson.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), f"is neither valid JSON nor YAML: {exc}".splitlines()[0]) from None


def pointer_get(doc: Any, pointer: str, where: str) -> Any:
    node = doc
    if pointer in ("", "/"):
        return node
    for raw in pointer.lstrip("/").split("/"):
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise SpecError(where, f"$ref target {pointer!r} does not exist")
    return node


@dataclass
class Spec:
    """A loaded document plus the other files its `$ref`s reach."""

    path: Path
    root: dict[str, Any]
    version: str  # "3.0" or "3.1"
    documents: dict[Path, Any] = field(default_factory=dict)

    def document(self, path: Path) -> Any:
        if path not in self.documents:
            self.documents[path] = read_document(path)
        return self.documents[path]

    def resolve(self, ref: str, base: Path) -> tuple[Path, str, Any]:
        """(file, pointer, node) that `ref`, written in file `base`, points at."""
        target, fragment = urldefrag(ref)
        if target.startswith(("http://", "https://")):
            raise SpecError(
                str(base), f"$ref {ref!r}: remote references are not fetched; save the file beside the spec"
            )
        path = (base.parent / unquote(target)).resolve() if target else base
        doc = self.document(path)
        return path, fragment, pointer_get(doc, fragment, f"{path}#{fragment}")

    def deref(self, node: Any, base: Path, limit: int = 32) -> tuple[Any, Path]:
        """Follow a chain of `$ref`s to the node it ends at."""
        while isinstance(node, dict) and "$ref" in node and isinstance(node["$ref"], str):
            limit -= 1
            if limit < 0:
                raise SpecError(str(base), f"$ref chain too long at {node['$ref']!r}")
            base, _, node = self.resolve(node["$ref"], base)
        return node, base


def _validate(root: dict[str, Any], path: Path) -> None:
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    try:
        validate(root, base_uri=path.resolve().as_uri())
    except OpenAPIValidationError as exc:
        where = "/".join(str(p) for p in getattr(exc, "path", ()) or ())
        message = str(getattr(exc, "message", exc)).splitlines()[0]
        raise SpecError(f"{path}#/{where}", f"not a valid OpenAPI document: {message}") from None
    except Exception as exc:  # unresolvable references and the like
        raise SpecError(str(path), f"not a valid OpenAPI document: {str(exc).splitlines()[0]}") from None


_cache: dict[tuple[str, int, int], Spec] = {}
_lock = threading.Lock()


def load_spec(path: str | os.PathLike[str], *, validate: bool = True) -> Spec:
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError as exc:
        raise SpecError(str(path), f"cannot be read ({exc.strerror or exc})") from None
    key = (str(p), st.st_mtime_ns, st.st_size)
    with _lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    root = read_document(p)
    if not isinstance(root, dict):
        raise SpecError(str(p), "an OpenAPI document is a mapping")
    version = str(root.get("openapi", ""))
    if version.startswith("3.0"):
        short = "3.0"
    elif version.startswith("3.1"):
        short = "3.1"
    else:
        raise SpecError(
            str(p), f"openapi: {version or 'missing'}; only 3.0 and 3.1 are supported (convert Swagger 2.0 first)"
        )
    if validate:
        _validate(root, p)
    spec = Spec(p, root, short, {p: root})
    with _lock:
        _cache[key] = spec
    return spec
