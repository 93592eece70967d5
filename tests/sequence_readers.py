"""Readers of JSON-sequence answers, as clients read them, and the leak check over what they
read: shared by the sequence red-team tests (unit and integration)."""

from __future__ import annotations

import json
from typing import Any

try:
    import ijson
except ImportError:  # pragma: no cover
    ijson = None


def _pairs(pairs: list[tuple[str, Any]]) -> Any:
    return ("__pairs__", pairs)


def lenient_docs(data: bytes) -> list[Any]:
    """Every piece between line ends or record separators that json.loads reads (every member,
    duplicates included; a leading byte order mark skipped); the others skipped, as a log shipper
    does."""
    out = []
    for piece in data.replace(b"\x1e", b"\n").replace(b"\r", b"\n").split(b"\n"):
        piece = piece.strip().removeprefix(b"\xef\xbb\xbf")
        if piece:
            try:
                out.append(json.loads(piece, object_pairs_hook=_pairs))
            except ValueError:
                pass
    return out


def ijson_docs(data: bytes) -> list[Any]:
    """ijson's multiple_values reader: the texts it yields before any error."""
    out: list[Any] = []
    if ijson is None:  # pragma: no cover
        return out
    try:
        for doc in ijson.items(data.replace(b"\x1e", b" "), "", multiple_values=True):
            out.append(doc)
    except Exception:  # ijson's errors: what was read before counts
        pass
    return out


def leaks(docs: list[Any], flt: Any) -> list[str]:
    """Filtered names (unmasked) and sensitive values in parsed documents (`flt`: a ResponseFilter)."""
    found = []
    stack = list(docs)
    while stack:
        node = stack.pop()
        items = node[1] if isinstance(node, tuple) else node.items() if isinstance(node, dict) else None
        if items is not None:
            for k, v in items:
                if k.lower() in flt.names and (flt.remove or v != flt.mask):
                    found.append(f"name {k!r}")
                stack.append(v)
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and flt.value_sensitive(node):
            found.append(f"value {node[:20]!r}")
    return found


def all_leaks(data: bytes, flt: Any) -> list[str]:
    """What a line reader and a streaming reader find of `flt`'s fields in `data`."""
    return leaks(lenient_docs(data), flt) + leaks(ijson_docs(data), flt)
