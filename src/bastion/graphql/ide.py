"""GraphQL IDE pages (GraphiQL, GraphQL Playground, Altair, Voyager, Apollo Sandbox, GraphQL
Explorer consoles): recognised by request and by answer.

By request: a GET or HEAD whose `Accept` prefers `text/html` (a browser navigating: its Accept
starts with `text/html`, which no GraphQL client sends), or whose last path segments are one of
the IDEs' usual paths (`/graphiql`, `/playground`, `/altair`, `/voyager`, `/graphql/console`,
...). By answer: an HTML page from the upstream whose first bytes name one of the IDEs — for
servers that serve the IDE on the endpoint whatever the Accept header says.
"""

from __future__ import annotations

import re

IDE_PATHS = (
    "graphiql",
    "playground",
    "altair",
    "voyager",
    "graphql/console",
    "console",
    "explorer",
    "sandbox",
    "graphql-playground",
    "graphql/playground",
    "graphql/graphiql",
    "graphql/altair",
    "graphql/voyager",
    "graphql-explorer",
)

MARKERS = re.compile(
    rb"graphiql|graphql[ -]?playground|altair|graphql-voyager|voyager\.(?:css|js|standalone)"
    rb"|apollo[ -]?sandbox|embeddable-sandbox|graphql-ws-playground",
    re.IGNORECASE,
)
HTML = re.compile(rb"^\s*(?:<!--[\s\S]*?-->\s*)?<(?:!doctype\s+html|html|head|body|script|div|meta)\b", re.IGNORECASE)
SNIFF_BYTES = 64 * 1024  # IDE pages name themselves in the head; markers further down are ignored


def wants_html(accept: bytes | None) -> bool:
    """The client asked for a page: `text/html` listed before any JSON media type."""
    if not accept:
        return False
    for part in accept.lower().split(b","):
        media = part.split(b";", 1)[0].strip()
        if media == b"text/html" or media == b"application/xhtml+xml":
            return True
        if media in (b"application/json", b"application/graphql-response+json", b"multipart/mixed"):
            return False
    return False


def is_ide_path(path: str) -> bool:
    p = path.lower().rstrip("/")
    return any(p == "/" + name or p.endswith("/" + name) for name in IDE_PATHS)


def is_ide_page(body: bytes) -> bool:
    head = body[:SNIFF_BYTES]
    return HTML.search(head) is not None and MARKERS.search(head) is not None
